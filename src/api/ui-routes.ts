// GET /ui: the dashboard, a page built from web/ by `npm run build` (vite) into
// dist/web. The files hold no data, so their routes are `public` (no token,
// access.ts); every call the page makes to /v1 carries the token the operator
// typed in, a monitor token enough to watch (docs/api.md "Dashboard").
//
// Only the files found under dist/web when the server starts are served, each
// by its exact name from that fixed list: a request path is a key into the
// list, never joined to a folder, so no path can reach another file. Each
// answer carries a Content-Security-Policy that allows scripts, styles and
// connections from this origin only (the page has no inline script and loads
// nothing from elsewhere). Without a built dashboard /ui answers NOT_FOUND
// saying how to build it.

import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { TwinstoreError } from '../errors.js';

export const UI_PATH = '/ui';
/** Where the build puts the page: dist/web beside dist/api. */
export const uiBuildDir = path.resolve(import.meta.dirname, '..', 'web');
/** Files served at most (a built page has a handful); more means a wrong folder. */
export const uiFilesMax = 64;

export const uiContentSecurityPolicy = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "img-src 'self' data:",
  "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

interface UiFile {
  body: Buffer;
  type: string;
}

/** The built files by URL path below /ui/ (e.g. "assets/index-abc.js"), read once. */
export function loadUiFiles(dir: string): Map<string, UiFile> {
  const files = new Map<string, UiFile>();
  if (!fs.existsSync(dir)) return files;
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const type = contentTypes[path.extname(entry.name)];
    if (type === undefined) continue;
    const full = path.join(entry.parentPath, entry.name);
    const name = path.relative(dir, full).split(path.sep).join('/');
    if (files.size >= uiFilesMax) throw new Error(`more than ${uiFilesMax} files in ${dir}: not a built dashboard`);
    files.set(name, { body: fs.readFileSync(full), type });
  }
  return files;
}

export function addUiRoutes(app: FastifyInstance, dir = uiBuildDir): void {
  const files = loadUiFiles(dir);
  const send = (reply: FastifyReply, name: string): FastifyReply => {
    const file = files.get(name);
    if (file === undefined) {
      const hint = files.size === 0 ? ' (the dashboard is not built: npm run build)' : '';
      throw new TwinstoreError('NOT_FOUND', `no dashboard file ${UI_PATH}/${name}${hint}`);
    }
    // Vite names assets by content hash: they never change; the page itself is looked up each time.
    const cache = name.startsWith('assets/') ? 'public, max-age=31536000, immutable' : 'no-store';
    return reply
      .header('content-type', file.type)
      .header('content-security-policy', uiContentSecurityPolicy)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', cache)
      .send(file.body);
  };
  const open = { config: { access: 'public' as const } };
  app.get(UI_PATH, open, async (_request, reply) => reply.redirect(`${UI_PATH}/`));
  // `/ui/*` matches /ui/ too, with an empty name: the page.
  app.get<{ Params: { '*': string } }>(`${UI_PATH}/*`, open, async (request, reply) => send(reply, request.params['*'] || 'index.html'));
}
