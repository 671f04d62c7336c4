// `twinstore tls ca|server|client|psk`: makes the certificates and pre-shared
// keys for NBD over TLS (tls-files.ts does the work) and says where each file
// goes. It runs locally and needs no array. `twinstore keys` stays the maker of
// the array-to-array link key.

import path from 'node:path';
import type { Command } from 'commander';
import { addPsk, checkIdentity, makeCa, makeLeaf, type Written } from './tls-files.js';

function report(written: Written, hints: string[]): void {
  const lines = written.files.map((file) => `wrote ${file}${file.endsWith('.pem') && !file.endsWith('key.pem') ? '' : ' (mode 0600)'}`);
  process.stdout.write([...lines, ...hints, ''].join('\n'));
}

/**
 * The CA folder: `--ca` after `tls server|client` is read by the program's global `--ca` (the API's
 * CA file, which has the same name), so it is taken from there; missing, a usage error as commander gives.
 */
function caDir(own: string | undefined, program: Command, command: Command): string {
  const dir = own ?? (program.opts() as { ca?: string }).ca;
  if (dir === undefined) command.error("error: required option '--ca <dir>' not specified", { exitCode: 2 });
  return dir;
}

export function addTlsCommand(program: Command): void {
  const tls = program.command('tls').description('make certificates and pre-shared keys for NBD over TLS (docs/security.md)');

  tls.command('ca')
    .description('make a site CA: DIR/ca-cert.pem and DIR/ca-key.pem')
    .requiredOption('--out <dir>', 'folder for the CA (made mode 0700 if missing)')
    .option('--force', 'replace an existing CA (every certificate it signed stops being trusted)')
    .action((opts: { out: string; force?: boolean }) => {
      const written = makeCa(opts.out, { force: opts.force === true });
      report(written, [
        'Keep ca-key.pem offline or at least private: whoever holds it can make certificates hosts and arrays trust.',
        `Next: twinstore tls server --ca ${path.resolve(opts.out)} --name HOST --out DIR`,
      ]);
    });

  tls.command('server')
    .description("make an array's NBD and API server certificate, signed by the CA (SAN DNS:HOST and IP:127.0.0.1)")
    .option('--ca <dir>', 'the CA folder (ca-cert.pem, ca-key.pem); required')
    .requiredOption('--name <host>', 'the host name clients use to reach the array')
    .requiredOption('--out <dir>', 'folder for server-cert.pem, server-key.pem and a copy of ca-cert.pem')
    .option('--force', 'replace existing files')
    .action((opts: { ca?: string; name: string; out: string; force?: boolean }, command: Command) => {
      const written = makeLeaf({ caDir: caDir(opts.ca, program, command), out: opts.out, kind: 'server', name: opts.name, force: opts.force === true });
      const dir = path.resolve(opts.out);
      report(written, [
        'In the array config:',
        '  nbd:',
        '    tls: require',
        `    certFile: ${path.join(dir, 'server-cert.pem')}`,
        `    keyFile: ${path.join(dir, 'server-key.pem')}`,
        `    clientCaFile: ${path.join(dir, 'ca-cert.pem')}   # optional: hosts then need a client certificate`,
        'and for HTTPS on the API (the CLI then trusts the ca-cert.pem beside certFile):',
        '  api:',
        '    tls:',
        `      certFile: ${path.join(dir, 'server-cert.pem')}`,
        `      keyFile: ${path.join(dir, 'server-key.pem')}`,
        'Replace the files later and run twinstore reload (or send the array SIGHUP): new connections use them.',
      ]);
    });

  tls.command('client')
    .description('make a host client certificate, signed by the CA; its subject CN is the identity access lists name')
    .option('--ca <dir>', 'the CA folder (ca-cert.pem, ca-key.pem); required')
    .requiredOption('--name <id>', "the client's identity (certificate CN)")
    .requiredOption('--out <dir>', 'folder for client-cert.pem, client-key.pem and a copy of ca-cert.pem')
    .option('--force', 'replace existing files')
    .action((opts: { ca?: string; name: string; out: string; force?: boolean }, command: Command) => {
      checkIdentity(opts.name, 'name');
      const written = makeLeaf({ caDir: caDir(opts.ca, program, command), out: opts.out, kind: 'client', name: opts.name, force: opts.force === true });
      const dir = path.resolve(opts.out);
      report(written, [
        'Copy the folder to the host over a secure channel. On the host:',
        `  qemu-img info --object tls-creds-x509,id=tls0,dir=${dir},endpoint=client --image-opts driver=nbd,host=ARRAY,port=10809,export=VOLUME,tls-creds=tls0`,
        `  nbdinfo 'nbds://ARRAY:10809/VOLUME?tls-certificates=${dir}'`,
      ]);
    });

  tls.command('psk')
    .description('add a TLS-PSK key for a host to a key file (identity:hexkey lines, as qemu, nbdkit and libnbd read)')
    .requiredOption('--identity <id>', "the host's PSK identity")
    .requiredOption('--out <file>', 'the key file (made mode 0600; other identities in it are kept)')
    .option('--force', 'replace the key of an identity the file already holds')
    .action((opts: { identity: string; out: string; force?: boolean }) => {
      const written = addPsk(opts.out, opts.identity, { force: opts.force === true });
      const file = path.resolve(opts.out);
      report(written, [
        `In the array config: nbd.pskFile: ${file}`,
        `A host needs its own line only (grep '^${opts.identity}:' ${file} > keys.psk), mode 0600:`,
        `  qemu-img info --object tls-creds-psk,id=tls0,dir=FOLDER_WITH_keys.psk,username=${opts.identity},endpoint=client ...`,
        `  nbdinfo 'nbds://${opts.identity}@ARRAY:10809/VOLUME?tls-psk-file=keys.psk'   (libnbd takes the PSK identity from the URI's user part)`,
      ]);
    });
}
