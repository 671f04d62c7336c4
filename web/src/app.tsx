// The dashboard page: asks for the API token first (kept in sessionStorage
// for this tab, sent only as a header, never in a URL), then polls the array's
// status, links, pairs and history, follows its event stream to refresh at
// once on a change, and draws the groups and the charts.

import { useEffect, useMemo, useState } from 'preact/hooks';
import { Api, ApiError, type ArrayEvent } from './api.js';
import { Chart } from './chart.js';
import { bytes, duration } from './format.js';
import { GroupPanel } from './groups.js';
import type { History, Pair, Peer, Status } from './model.js';
import { chartData, livePoint, livePointsMax, type LivePoint } from './series.js';

const tokenKey = 'twinstore-token';
/** How often the pairs, status and links are read. */
export const pollMs = 2_000;
/** How often the history is read again (it gains a sample per interval). */
export const historyPollMs = 5_000;
/** Events listed at most, newest first. */
export const eventsShownMax = 12;

interface Snapshot {
  status: Status;
  peers: Peer[];
  pairs: Pair[];
}

export function App() {
  const [token, setToken] = useState(() => sessionStorage.getItem(tokenKey));
  const [refused, setRefused] = useState<string | null>(null);
  // One client per token: the dashboard's polls and stream restart only when it changes.
  const api = useMemo(() => (token === null ? null : new Api(token)), [token]);
  if (api === null) {
    return <TokenForm error={refused} onToken={(t) => { sessionStorage.setItem(tokenKey, t); setRefused(null); setToken(t); }} />;
  }
  const signOut = (why: string | null): void => {
    sessionStorage.removeItem(tokenKey);
    setRefused(why);
    setToken(null);
  };
  return <Dashboard api={api} onSignOut={signOut} />;
}

function TokenForm(props: { error: string | null; onToken: (token: string) => void }) {
  const [value, setValue] = useState('');
  return (
    <form class="token" onSubmit={(e) => { e.preventDefault(); if (value.trim() !== '') props.onToken(value.trim()); }}>
      <h1>Twinstore</h1>
      <label>API token (a <code>monitor</code> token where roles exist)
        <input type="password" name="token" autocomplete="off" data-testid="token-input" value={value} onInput={(e) => setValue(e.currentTarget.value)} />
      </label>
      <button type="submit" data-testid="token-submit">Open dashboard</button>
      {props.error && <p class="error" data-testid="token-error">{props.error}</p>}
    </form>
  );
}

function usePolling(api: Api, onSignOut: (why: string) => void) {
  const [snapshot, setSnapshot] = useState<Snapshot | null>(null);
  const [history, setHistory] = useState<History | null>(null);
  const [live, setLive] = useState<LivePoint[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [events, setEvents] = useState<ArrayEvent[]>([]);
  const [streamUp, setStreamUp] = useState(false);
  const [tick, setTick] = useState(0);
  const refresh = (): void => setTick((n) => n + 1);
  const fail = (e: unknown): void => {
    if (e instanceof ApiError && e.code === 'UNAUTHORIZED') onSignOut(`${e.code}: ${e.message}`);
    else setError(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e));
  };
  useEffect(() => {
    const read = async (): Promise<void> => {
      const [status, peers, pairs] = await Promise.all([
        api.get<Status>('/v1/status'), api.get<{ peers: Peer[] }>('/v1/peers'), api.get<{ pairs: Pair[] }>('/v1/pairs'),
      ]);
      setSnapshot({ status, peers: peers.peers, pairs: pairs.pairs });
      setLive((points) => [...points, livePoint(pairs.pairs, Date.now())].slice(-livePointsMax));
      setError(null);
    };
    read().catch(fail);
    const timer = setInterval(() => read().catch(fail), pollMs);
    return () => clearInterval(timer);
  }, [api, tick]);
  useEffect(() => {
    // An array without /v1/history (an older version) still gets the live points.
    const read = (): void => void api.get<History>('/v1/history').then(setHistory, (e: unknown) => {
      if (!(e instanceof ApiError && e.code === 'NOT_FOUND')) fail(e);
    });
    read();
    const timer = setInterval(read, historyPollMs);
    return () => clearInterval(timer);
  }, [api]);
  useEffect(() => {
    const abort = new AbortController();
    void api.follow((event) => {
      if (event.type !== 'copy-progress') setEvents((list) => [event, ...list].slice(0, eventsShownMax));
      if (event.type !== 'snapshot-end' && event.type !== 'copy-progress') refresh();
    }, setStreamUp, abort.signal);
    return () => abort.abort();
  }, [api]);
  return { snapshot, history, live, error, events, streamUp, refresh };
}

function Dashboard(props: { api: Api; onSignOut: (why: string | null) => void }) {
  const { snapshot, history, live, error, events, streamUp, refresh } = usePolling(props.api, props.onSignOut);
  const now = Date.now();
  if (snapshot === null) return <main><p>{error ?? 'Loading…'}</p></main>;
  const { status, peers, pairs } = snapshot;
  const groups = [...new Set(pairs.map((p) => p.group))].sort();
  return (
    <main>
      <header>
        <h1 data-testid="array-name">{status.array}</h1>
        <span class="muted">twinstore {status.version}, up {duration(status.uptimeSeconds)}, {status.volumes} volumes</span>
        <span class={streamUp ? 'up' : 'down'} data-testid="stream-state">events {streamUp ? 'live' : 'reconnecting'}</span>
        <button type="button" data-testid="forget-token" onClick={() => props.onSignOut(null)}>Forget token</button>
      </header>
      {error && <p class="error" data-testid="poll-error">{error}</p>}
      <section class="links">
        <h2>Links</h2>
        {peers.length === 0 ? <p class="muted">no peer arrays</p> : (
          <ul>{peers.map((p) => <li data-testid={`peer-${p.id}`} class={p.connected ? 'up' : 'down'}>{p.id} ({p.link}) {p.connected ? 'up' : 'down'}</li>)}</ul>
        )}
      </section>
      {groups.map((g) => (
        <GroupPanel api={props.api} array={status.array} group={g} pairs={pairs.filter((p) => p.group === g)}
          alerts={status.alerts.filter((a) => a.group === g)} now={now} onAction={refresh} />
      ))}
      <Charts history={history} live={live} groups={groups} />
      <section class="events">
        <h2>Recent events</h2>
        <ul>{events.map((e) => <li><span class="muted">{e.at}</span> {e.type} {JSON.stringify(e.data)}</li>)}</ul>
      </section>
    </main>
  );
}

function Charts(props: { history: History | null; live: LivePoint[]; groups: string[] }) {
  const data = chartData(props.history?.samples ?? [], props.live, props.groups);
  const perGroup = (columns: Record<string, Array<number | null>>) => props.groups.map((g) => ({ label: g, values: columns[g] ?? [] }));
  const percent = (v: number): string => `${Math.round(v * 10) / 10}%`;
  const rate = (v: number): string => `${bytes(v)}/s`;
  return (
    <section class="charts">
      <h2>Last hour</h2>
      <div class="chart-grid">
        <Chart id="lag-seconds" title="Lag (seconds)" times={data.times} series={perGroup(data.lagSeconds)} format={duration} />
        <Chart id="lag-bytes" title="Lag (bytes)" times={data.times} series={perGroup(data.lagBytes)} format={bytes} />
        <Chart id="journal" title="Journal used" times={data.times} series={perGroup(data.journalPercent)} format={percent} />
        <Chart id="iops" title="Host IOPS" times={data.times} series={[{ label: 'read', values: data.readOps }, { label: 'write', values: data.writeOps }]} format={(v) => String(Math.round(v * 10) / 10)} />
        <Chart id="throughput" title="Host throughput" times={data.times} series={[{ label: 'read', values: data.readBytes }, { label: 'write', values: data.writeBytes }]} format={rate} />
      </div>
    </section>
  );
}
