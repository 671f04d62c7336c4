// The shapes the dashboard reads from the API (docs/api.md), taken from the
// server's own types so the page and the API cannot drift apart: the pair
// rows of GET /v1/pairs, GET /v1/status with its alerts, GET /v1/peers and
// GET /v1/history. Types only: nothing of the server is bundled.

export type { PairDisplay as Pair } from '../../src/replication/model.js';
export type { AlertJson as Alert } from '../../src/array/alerts.js';
export type { StatusJson as Status } from '../../src/api/server.js';
export type { GroupSample, VolumeSample, HistorySample, HistoryJson as History } from '../../src/array/history.js';

export interface Peer {
  id: string;
  link: string;
  connected: boolean;
}
