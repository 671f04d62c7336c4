// A journal group's panel: its pairs (status and why, what recovers it, the
// consistency point and its age, copy progress with rate and ETA, lag), its
// alerts, and the buttons that act on it.

import type { Api } from './api.js';
import { GroupActions } from './actions.js';
import { age, bytes, duration } from './format.js';
import type { Alert, Pair } from './model.js';

export interface GroupProps {
  api: Api;
  array: string;
  group: string;
  pairs: Pair[];
  alerts: Alert[];
  now: number;
  onAction: () => void;
}

function copyCell(pair: Pair): string {
  if (pair.status !== 'COPY') return `${pair.copyPercent}%`;
  const rate = pair.copyRateBytesPerSecond === null ? '' : ` at ${bytes(pair.copyRateBytesPerSecond)}/s`;
  const eta = pair.copyEtaSeconds === null ? '' : `, ETA ${duration(pair.copyEtaSeconds)}`;
  return `${pair.copyPercent}%${rate}${eta}`;
}

function PairRow(props: { pair: Pair; now: number }) {
  const p = props.pair;
  const status = p.restorePaused ? `${p.status} (paused)` : p.status;
  return (
    <tr data-testid={`pair-${p.pvol}`}>
      <td>{p.pvol}</td>
      <td>{p.svol}</td>
      <td class={`status status-${p.status}`} data-testid="pair-status">{status}</td>
      <td>{p.statusReason ?? ''}{p.recovery && <div class="recovery">{p.recovery}</div>}</td>
      {p.svolConsistent === false
        ? <td data-testid="pair-consistency">none<div class="muted">S-VOL mid-copy</div></td>
        : <td data-testid="pair-consistency">seq {p.consistencySeq}<div class="muted">{age(p.consistencyTime, props.now)}</div></td>}
      <td data-testid="pair-copy">{copyCell(p)}</td>
      <td data-testid="pair-lag-seconds">{duration(p.lagSeconds)}</td>
      <td data-testid="pair-lag-bytes" data-value={String(p.lagBytes)}>{bytes(p.lagBytes)}</td>
      <td>{p.journalUsedPercent}%</td>
      <td>{p.pendingBytes > 0 ? bytes(p.pendingBytes) : ''}</td>
    </tr>
  );
}

export function GroupPanel(props: GroupProps) {
  const direction = props.pairs[0]?.direction ?? '';
  const receiver = !direction.startsWith(`${props.array}->`);
  return (
    <section class="group" data-testid={`group-${props.group}`}>
      <h2>Group {props.group} <span class="muted">{direction}</span></h2>
      <table>
        <thead>
          <tr><th>P-VOL</th><th>S-VOL</th><th>Status</th><th>Reason</th><th>Consistency point</th><th>Copy</th><th>Lag</th><th>Lag bytes</th><th>Journal</th><th>Pending</th></tr>
        </thead>
        <tbody>{props.pairs.map((p) => <PairRow pair={p} now={props.now} />)}</tbody>
      </table>
      {props.alerts.length > 0 && (
        <ul class="alerts" data-testid={`alerts-${props.group}`}>
          {props.alerts.map((a) => <li>{a.alert}: {a.message} (since {age(a.since, props.now)})</li>)}
        </ul>
      )}
      <GroupActions api={props.api} group={props.group} receiver={receiver} onDone={props.onAction} />
    </section>
  );
}
