#!/usr/bin/env node
// Entry point. The libuv thread pool serves every drive read, write and sync;
// its size must be set before anything uses it, hence before the first import.
process.env.UV_THREADPOOL_SIZE ??= '4';
const { main } = await import('../dist/cli/main.js');
await main(process.argv);
