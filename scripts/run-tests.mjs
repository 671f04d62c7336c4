// Runs every test file under test/ with node's test runner and tsx. Node 20's
// runner takes no globs, so the files are listed here. Pass paths to run fewer.
// --test-force-exit: a test file whose tests have all ended exits even if a
// handle it leaked keeps its event loop busy (one CI run hung that way after
// test/replication/planted-bugs.test.ts had passed).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const args = process.argv.slice(2);
const files = args.length > 0 ? args : fs.readdirSync('test', { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.ts'))
  .sort()
  .map((f) => path.join('test', f));
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-force-exit', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);
