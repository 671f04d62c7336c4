// Goal: the CLI given --config reaches an array whose API is bound to every
// address (0.0.0.0 or ::, as run.json records it) on loopback, the address
// its certificate names, not at the wildcard. (An array bound to 0.0.0.0 is
// not started here: test servers listen on 127.0.0.1 only.)
// Method: the address rewrite the CLI applies to run.json's address.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reachable } from '../../src/cli/client.js';

test('a wildcard API address is reached on loopback; others as given', () => {
  assert.equal(reachable('0.0.0.0:7700'), '127.0.0.1:7700');
  assert.equal(reachable('[::]:7700'), '[::1]:7700');
  assert.equal(reachable('10.0.0.5:7700'), '10.0.0.5:7700');
  assert.equal(reachable('[fd00::5]:7700'), '[fd00::5]:7700');
  assert.equal(reachable('127.0.0.1:0'), '127.0.0.1:0');
});
