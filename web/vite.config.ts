// Builds the dashboard (web/) into dist/web, served at /ui by src/api/ui-routes.ts.
// Everything the page needs is bundled: no CDN, nothing fetched at run time but
// the array's own /v1 API. JSX is compiled for preact by vite's own transform.
import path from 'node:path';
import { defineConfig } from 'vite';

export default defineConfig({
  root: import.meta.dirname,
  base: '/ui/',
  publicDir: false,
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: path.resolve(import.meta.dirname, '..', 'dist', 'web'),
    emptyOutDir: true,
    // No inline modulepreload polyfill or data: scripts: the CSP allows scripts from 'self' only.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
  },
});
