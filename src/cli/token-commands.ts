// `twinstore token create|list|revoke` and `twinstore reload`: calls to the
// running array's API with an admin token, so a new token works and a revoked
// one stops working at once, and a reload happens in the process that serves
// (docs/security.md). `token create` prints the secret once; the array keeps
// only its hash.

import type { Command } from 'commander';
import { connect, type ConnectionOptions } from './client.js';
import { print, table } from './table.js';

type GlobalOptions = ConnectionOptions & { json?: boolean };

interface TokenRow {
  name: string;
  role: string;
  createdAt: string;
}

interface ReloadRow {
  part: string;
  state: string;
}

export function addTokenCommands(program: Command, globals: () => GlobalOptions): void {
  const token = program.command('token').description('API tokens: admin (everything) or monitor (read only)');
  token.command('create')
    .description('make a token and print its secret (shown this once)')
    .requiredOption('--role <role>', 'admin or monitor')
    .option('--name <name>', 'a name for the audit log and token revoke (default: ROLE-TIME)')
    .option('--json', 'print JSON')
    .action(async (opts: { role: string; name?: string; json?: boolean }) => {
      const name = opts.name ?? `${opts.role}-${Date.now().toString(36)}`;
      const made = await connect(globals()).request<TokenRow & { token: string }>('POST', '/v1/tokens', { name, role: opts.role });
      print(opts.json ?? globals().json, made, () => `${made.token}\n(token ${made.name}, role ${made.role}: keep it now, it is not shown again)`);
    });
  token.command('list')
    .description('list the tokens: name, role, created (never the secrets)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const { tokens } = await connect(globals()).request<{ tokens: TokenRow[] }>('GET', '/v1/tokens');
      const rows = [['admin', 'admin', 'the token file or api.token'], ...tokens.map((t) => [t.name, t.role, t.createdAt])];
      print(opts.json ?? globals().json, { tokens }, () => table(['NAME', 'ROLE', 'CREATED'], rows));
    });
  token.command('revoke <name>')
    .description('revoke a token: the next call with it is refused')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { json?: boolean }) => {
      const result = await connect(globals()).request<{ revoked: string }>('DELETE', `/v1/tokens/${encodeURIComponent(name)}`);
      print(opts.json ?? globals().json, result, () => `revoked token ${result.revoked}`);
    });

  program.command('reload')
    .description('re-read the NBD and API TLS files, as SIGHUP does (a file that does not load keeps the old ones)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const result = await connect(globals()).request<{ reloaded: ReloadRow[] }>('POST', '/v1/reload');
      print(opts.json ?? globals().json, result, () => result.reloaded.map((r) => `${r.part}: ${r.state === 'off' ? 'no TLS' : r.state}`).join('\n'));
    });
}
