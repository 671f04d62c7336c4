// The release version, alone in a module so that the CLI's client verbs can
// print it without loading the array (each CLI call is a process start: the
// cluster manager's agent runs several every few seconds).

export const VERSION = '0.1.0';
