// The test-only fault switch of a running array (src/storage/fault-file.ts):
// the trigger file a test writes lines into, and the wait for the array to act
// on them (it writes the lines it acts on to `<trigger>.seen`), so no test
// sleeps for the 50 ms poll.

import type { TestContext } from 'node:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { waitFor } from './replication.js';

export interface FaultTrigger {
  /** TWINSTORE_TEST_IO_ERROR_FILE for the array's environment. */
  env: Record<string, string>;
  /** Puts these lines in the trigger file (none: removes it) and waits until the array acts on them. */
  set: (lines: string[]) => Promise<void>;
}

export function faultTrigger(t: TestContext): FaultTrigger {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'twinstore-fault-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const trigger = path.join(dir, 'io-error');
  const seen = `${trigger}.seen`;
  return {
    env: { TWINSTORE_TEST_IO_ERROR_FILE: trigger },
    set: async (lines) => {
      const text = lines.map((line) => `${line}\n`).join('');
      if (lines.length === 0) fs.rmSync(trigger, { force: true });
      else fs.writeFileSync(trigger, text);
      const acted = (): boolean => (fs.existsSync(seen) ? fs.readFileSync(seen, 'utf8') : '') === text;
      await waitFor(`the array to act on the fault lines ${JSON.stringify(lines)}`, acted, 30_000, 20);
    },
  };
}
