// The split / resync / takeover buttons of a group. Each opens a confirm
// dialog that names what will happen and the equivalent CLI line (the real
// commands of src/cli/replication-commands.ts, against this array's API), and
// only on "Run" calls the API; its answer or error (code and message) is shown.

import { useState } from 'preact/hooks';
import { ApiError, type Api } from './api.js';

export interface Action {
  id: 'split' | 'resync' | 'takeover';
  label: string;
  what: string;
  route: string;
  cli: string[];
}

export function groupActions(group: string): Action[] {
  return [
    { id: 'split', label: 'Split', route: '/v1/pairs/split', cli: ['pair', 'split', '--group', group],
      what: `Stop the S-VOLs of ${group} at a consistency point (PSUS); changes are tracked on both sides.` },
    { id: 'resync', label: 'Resync', route: '/v1/pairs/resync', cli: ['pair', 'resync', '--group', group],
      what: `Copy the regions changed since the split or suspension of ${group}, then PAIR.` },
    { id: 'takeover', label: 'Takeover', route: '/v1/takeover', cli: ['takeover', '--group', group],
      what: `Make this array the primary of ${group}: a planned swap when the primary answers, else a takeover without it.` },
  ];
}

/** The command a person would type for the same thing (the token from TWINSTORE_TOKEN). */
export function cliLine(action: Action, origin: string): string {
  return ['twinstore', '--api', origin, ...action.cli].join(' ');
}

export interface ActionsProps {
  api: Api;
  group: string;
  /** Takeover is run on the receiving array. */
  receiver: boolean;
  onDone: () => void;
}

export function GroupActions(props: ActionsProps) {
  const [open, setOpen] = useState<Action | null>(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const actions = groupActions(props.group).filter((a) => a.id !== 'takeover' || props.receiver);
  const run = async (action: Action): Promise<void> => {
    // The dialog closes at once: a resync or takeover may answer only after a while, and the table shows it going.
    setBusy(true);
    setOpen(null);
    setResult({ ok: true, text: `${action.label} ${props.group}: running…` });
    try {
      const answer = await props.api.post<unknown>(action.route, { group: props.group });
      setResult({ ok: true, text: `${action.label} ${props.group}: ${JSON.stringify(answer)}` });
    } catch (error) {
      const e = error instanceof ApiError ? error : new ApiError('INTERNAL', String(error), 0);
      setResult({ ok: false, text: `${action.label} ${props.group} failed: ${e.code}: ${e.message}` });
    } finally {
      setBusy(false);
      props.onDone();
    }
  };
  return (
    <div class="actions">
      {actions.map((a) => (
        <button type="button" data-testid={`action-${a.id}-${props.group}`} disabled={busy} onClick={() => { setResult(null); setOpen(a); }}>{a.label}</button>
      ))}
      {result && <p class={result.ok ? 'result' : 'error'} data-testid={`action-result-${props.group}`}>{result.text}</p>}
      {open && (
        <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="confirm-title" data-testid="confirm-dialog">
          <h3 id="confirm-title">{open.label} {props.group}?</h3>
          <p>{open.what}</p>
          <p>The same from a shell:</p>
          <pre data-testid="confirm-cli">{cliLine(open, location.origin)}</pre>
          <div class="buttons">
            <button type="button" data-testid="confirm-run" onClick={() => void run(open)}>Run</button>
            <button type="button" data-testid="confirm-cancel" onClick={() => setOpen(null)}>Cancel</button>
          </div>
        </div>
      )}
    </div>
  );
}
