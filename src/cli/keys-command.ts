// `twinstore keys --out FILE`: makes a new link key (32 random bytes as hex,
// mode 0600) for two arrays to share, and says how to use it. It runs locally
// and needs no array.

import path from 'node:path';
import type { Command } from 'commander';
import { writePskFile } from '../link/index.js';

export function addKeysCommand(program: Command): void {
  program.command('keys')
    .description('make a new link key (pre-shared key) for two arrays: twinstore keys --out FILE')
    .requiredOption('--out <file>', 'where to write the key (mode 0600)')
    .option('--force', 'replace an existing file')
    .action((opts: { out: string; force?: boolean }) => {
      writePskFile(opts.out, { force: opts.force === true });
      const file = path.resolve(opts.out);
      process.stdout.write([
        `wrote a new 32-byte link key to ${file} (mode 0600)`,
        'Both arrays of a pair need this same key. Copy the file to the other array over a',
        'secure channel (scp, not e-mail), keep it mode 0600, and name it in both configs:',
        '  link:',
        `    pskFile: ${file}`,
        'Arrays whose keys differ refuse each other (LINK_AUTH in the logs).',
        '',
      ].join('\n'));
    });
}
