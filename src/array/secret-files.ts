// Secrets on disk (the link key, the API token file) must be readable by the
// array's user only: whoever can read the link key can join the link as a
// peer, and whoever can read the token can run every API command. At start the
// array checks each file's mode and logs one warn line per file that group or
// others may read or write, naming the file, its mode and the fix. It does not
// refuse to start: the operator may have reasons (a shared group on purpose),
// and a refusal at boot would take the array's volumes away from its hosts.

import fs from 'node:fs';
import type { Logger } from '../util/log.js';

export interface SecretFile {
  /** What the file is, for the log line ("link key file link.pskFile"). */
  what: string;
  path: string;
}

/** Permission bits for group and others: any of them open on a secret is worth a warning. */
const GROUP_OTHER_BITS = 0o077;

/** Logs one warn line for each file open to group or others; a missing file is not this check's business. */
export function warnExposedSecrets(files: readonly SecretFile[], log: Logger): void {
  for (const file of files) {
    let mode: number;
    try {
      mode = fs.statSync(file.path).mode & 0o777;
    } catch {
      continue;
    }
    if ((mode & GROUP_OTHER_BITS) === 0) continue;
    const octal = mode.toString(8).padStart(4, '0');
    log.warn({ file: file.path, mode: octal }, `${file.what} ${file.path} has mode ${octal}: group or others can read or change it; make it private with: chmod 600 ${file.path}`);
  }
}
