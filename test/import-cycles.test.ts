// Goal: no module of src/ imports itself through others (an import cycle). A cycle ties modules
// that should each have one job (a part reaching back into its owner), and in ESM it can hand a
// module an import that is not initialised yet.
// Method: read every src/**/*.ts as text, take the relative specifiers of its `import … from`,
// `export … from`, `import '…'` and `import('…')`, resolve them to files (`.js` names the `.ts`
// beside it, a folder its index.ts), and look for a cycle in that graph with a depth-first
// search; the failure names the files of each cycle in order. The graph is the one that runs:
// `import type` and `export type` statements are erased by the compiler (verbatimModuleSyntax
// keeps every other import, `import { type X }` included), so they are left out.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const srcDir = path.join(import.meta.dirname, '..', 'src');

/** Every .ts file below `dir`, as paths relative to src/. */
function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.ts')).map((f) => f.split(path.sep).join('/')).sort();
}

const specifierPatterns = [
  /\b(?:import|export)\s+(?!type\s)[^'";]*?\sfrom\s*['"]([^'"]+)['"]/g,
  /\bimport\s*['"]([^'"]+)['"]/g,
  /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
];

/** The src/ files that `file` imports (relative specifiers only: packages and node: are not ours). */
export function importsOf(file: string, text: string, known: ReadonlySet<string>): string[] {
  const out = new Set<string>();
  for (const pattern of specifierPatterns) {
    for (const match of text.matchAll(pattern)) {
      const specifier = match[1]!;
      if (!specifier.startsWith('.')) continue;
      const base = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier));
      const candidates = [base.replace(/\.js$/, '.ts'), `${base}.ts`, `${base}/index.ts`];
      const target = candidates.find((c) => known.has(c));
      assert.ok(target !== undefined, `${file} imports ${specifier}, which names no file of src/`);
      out.add(target);
    }
  }
  return [...out].sort();
}

/** Every cycle a depth-first search meets, each as the files along it (first file repeated at the end). */
export function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (file: string): void => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next]);
      else if (state.get(next) === undefined) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) if (state.get(file) === undefined) visit(file);
  return cycles;
}

test('no import cycle among the modules of src/', () => {
  const files = sourceFiles(srcDir);
  assert.ok(files.length > 50, `src/ holds the project's modules (found ${files.length} .ts files)`);
  const known = new Set(files);
  const graph = new Map(files.map((f) => [f, importsOf(f, fs.readFileSync(path.join(srcDir, f), 'utf8'), known)] as const));
  const edges = [...graph.values()].reduce((n, targets) => n + targets.length, 0);
  assert.ok(edges > files.length, `the scan finds the imports (${edges} edges over ${files.length} files)`);
  const cycles = findCycles(graph);
  assert.deepEqual(cycles.map((c) => c.join(' -> ')), [], `import cycles in src/:\n${cycles.map((c) => `  ${c.join(' -> ')}`).join('\n')}`);
});

test('the search finds a planted cycle and names its files', () => {
  const graph = new Map<string, string[]>([
    ['a.ts', ['b.ts']],
    ['b.ts', ['c.ts', 'd.ts']],
    ['c.ts', ['a.ts']],
    ['d.ts', []],
  ]);
  assert.deepEqual(findCycles(graph), [['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
  const known = new Set(['x/a.ts', 'x/b.ts', 'x/index.ts', 'y.ts']);
  const text = [
    "import { type A, a } from './a.js';",
    "export { B } from './b.js';",
    "import type { T } from './b.js';",
    "export type { U } from './gone.js';",
    "import '../y.js';",
    "const c = await import('./index.js');",
    "import { z } from 'zod';",
  ].join('\n');
  assert.deepEqual(importsOf('x/c.ts', text, known), ['x/a.ts', 'x/b.ts', 'x/index.ts', 'y.ts']);
});
