// The `twinstore` command: serve and demo run arrays; every other verb is an
// HTTP client of an array's management API. Errors print their stable code;
// exit status 1 means the command failed, 2 that it was called wrongly; a
// closed stdout (a pipe into head) ends any verb with 0.

import { Command, CommanderError } from 'commander';
import { TwinstoreError, isTwinstoreError } from '../errors.js';
import { VERSION } from '../version.js';
import { demo } from './demo.js';
import { addVolumeCommands } from './volume-commands.js';
import { addReplicationCommands } from './replication-commands.js';
import { addKeysCommand } from './keys-command.js';
import { addTlsCommand } from './tls-command.js';
import { addEventsCommand } from './events-command.js';
import { addTokenCommands } from './token-commands.js';
import { LOG_FORMATS, isLogFormat } from '../util/log.js';

export async function main(argv: string[]): Promise<void> {
  const program = new Command('twinstore')
    .version(VERSION)
    .description('A storage array with journal-based asynchronous remote copy, serving volumes over NBD')
    .option('--config <file>', "the array's own config file (to find its API and token)")
    .option('--api <url>', 'the array API URL, e.g. http://127.0.0.1:7700')
    .option('--token <token>', 'API token (default: TWINSTORE_TOKEN, or the data folder token with --config)')
    .option('--ca <file>', "the CA that signed an https API's certificate (default: TWINSTORE_CA, or api.tls.caFile with --config)")
    .option('--json', 'print JSON')
    .exitOverride();

  program.command('serve')
    .description('run an array: twinstore serve --config FILE')
    .option('--log-format <format>', 'json (for collectors) or pretty (for a person at a terminal); default json, or TWINSTORE_LOG_FORMAT')
    .action(async (opts: { logFormat?: string }) => {
      const config = program.opts().config;
      if (config === undefined) throw new TwinstoreError('BAD_REQUEST', 'serve needs --config FILE', { field: 'config' });
      const format = opts.logFormat ?? process.env.TWINSTORE_LOG_FORMAT;
      if (format !== undefined && !isLogFormat(format)) {
        throw new TwinstoreError('BAD_REQUEST', `--log-format "${format}" is not one of ${LOG_FORMATS.join(', ')}`, { field: 'log-format' });
      }
      if (format !== undefined) process.env.TWINSTORE_LOG_FORMAT = format;
      // Loaded here: the array's code is not needed by the client verbs, which start faster without it.
      const { serve } = await import('./serve.js');
      await serve(config);
    });

  program.command('demo')
    .description('start a demo array with nothing to configure')
    .option('--dir <dir>', 'where the demo keeps its config and data', 'twinstore-data')
    .action(async (opts: { dir: string }) => demo(opts.dir));

  // Not for serve and demo: an array must not end because whoever started it closed its stdout.
  program.hook('preAction', (_program, action) => {
    if (action.name() !== 'serve' && action.name() !== 'demo') endOnClosedPipe();
  });
  addVolumeCommands(program, () => program.opts());
  addReplicationCommands(program, () => program.opts());
  addKeysCommand(program);
  addTlsCommand(program);
  addEventsCommand(program, () => program.opts());
  addTokenCommands(program, () => program.opts());

  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      process.exitCode = error.exitCode === 0 ? 0 : 2;
      return;
    }
    if (isTwinstoreError(error)) {
      process.stderr.write(`twinstore: ${error.code}: ${error.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw error;
  }
}

/**
 * The reader of stdout went away (`twinstore pair display --watch | head -1`): what it wanted it
 * has, so the command ends with status 0 and no stack trace, whatever verb is running.
 */
function endOnClosedPipe(): void {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
}
