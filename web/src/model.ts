// The shapes the dashboard reads from the API (docs/api.md): the pair rows of
// GET /v1/pairs, GET /v1/status, GET /v1/peers and GET /v1/history. Only the
// fields the page shows are named.

export interface Pair {
  group: string;
  direction: string;
  pvol: string;
  svol: string;
  status: string;
  statusReason: string | null;
  copyPercent: number;
  journalUsedPercent: number;
  lagBytes: number;
  lagSeconds: number;
  consistencySeq: number;
  consistencyTime: string | null;
  copyRateBytesPerSecond: number | null;
  copyEtaSeconds: number | null;
  pendingBytes: number;
  restorePaused: boolean;
  recovery: string | null;
}

export interface Alert {
  group: string;
  alert: string;
  value: number;
  threshold: number;
  since: string;
  message: string;
}

export interface Status {
  array: string;
  version: string;
  uptimeSeconds: number;
  volumes: number;
  alerts: Alert[];
}

export interface Peer {
  id: string;
  link: string;
  connected: boolean;
}

export interface GroupSample {
  lagSeconds: number;
  lagBytes: number;
  journalUsedPercent: number;
}

export interface VolumeSample {
  readOps: number;
  writeOps: number;
  readBytes: number;
  writeBytes: number;
}

export interface HistorySample {
  at: string;
  groups: Record<string, GroupSample>;
  volumes: Record<string, VolumeSample>;
}

export interface History {
  intervalSeconds: number;
  samples: HistorySample[];
}
