// The replication link's wire contract, in one place: every method one array asks of the
// other over the link (src/link carries each as a JSON body plus payload buffers), its request
// body and its answer (`LinkMethods`), and the checks of both. The peer may run another version,
// or lie, so nothing it sends is believed before its shape is checked here: the answering side
// checks a request before any handler sees it (BAD_REQUEST naming the field, sent back to the
// asker), the asking side checks an answer before it acts on any of it (LINK_PROTOCOL naming
// the field). What depends on this array's state (a seq in order, a range inside a volume) is
// checked where that state lives. docs/link-protocol.md describes the same methods for people.

import { TwinstoreError } from '../errors.js';
import type { Epoch, JournalRecord, RecordKind, RecordMeta } from '../journal/index.js';
import { PAIR_STATUSES, type FencePolicy, type GroupRole, type PairMeta, type PairStatus } from './model.js';
import { Fields, type Refuse } from './wire-fields.js';

/** An answer as the link carries it: the JSON body, the payload, and each segment's CRC32C where known (checked). */
export interface PeerAnswer {
  body: unknown;
  payload: Buffer[];
  payloadCrcs?: readonly number[];
}

/** The link as replication uses it (a PeerLink, or the simulator's). Send through linkRequest. */
export interface PeerChannel {
  readonly connected: boolean;
  request(method: string, body: unknown, payload?: Buffer[], options?: { timeoutMs?: number }): Promise<PeerAnswer>;
}

export interface Ok {
  ok: true;
}
export const OK: Ok = { ok: true };

export interface GroupRequest {
  group: string;
}

export type EpochChain = Array<{ epoch: Epoch; firstSeq: number }>;

// ---- journal.read -----------------------------------------------------------------------

/** A stored record restore cannot apply (it fails its checksum); lun -1 when its header named none. */
export interface DamagedRecord {
  seq: number;
  lun: number;
  offset: number;
  length: number;
}

/** A receiver's report of a drive I/O error (sent with its journal.read). */
export interface ReceiverDriveError {
  /** Its applied cursor: restore stopped before this record. */
  seq: number;
  /** What failed, e.g. `S-VOL svol0 write: write failed on …`. */
  message: string;
  /** The start of the latest resync the receiver had heard of (its skipDamagedBefore). */
  resyncFromSeq: number;
}

/** The receiver's pull: durable records from `fromSeq`, and its own cursors and troubles. */
export interface JournalReadRequest extends GroupRequest {
  fromSeq: number;
  maxBytes: number;
  storedSeq: number;
  appliedSeq: number;
  damaged?: DamagedRecord;
  driveError?: ReceiverDriveError;
  /** The receiver's restore journal was started again after its header was lost: its cursors mean nothing. */
  journalLost?: boolean;
  /** Restore is paused on the receiver (pair restore --pause): records are stored, not applied. */
  restorePaused?: boolean;
}

/** A record on the wire: its data (write and base records) is the next payload segment. */
export interface WireRecord extends RecordMeta {
  dataBytes: number;
}

/** A pair's status as the master sees it (COPY → PAIR is decided there). */
export interface PairStatusReport {
  pvolLun: number;
  status: PairStatus;
  statusReason: string | null;
}

interface JournalReadAnswerBase {
  records: WireRecord[];
  /** The master's newest sequence, for display on the receiver. */
  masterNextSeq: number;
  pairs: PairStatusReport[];
}

/** The answer to a pull; `skipTo`: a resync re-copies every region of the records below it: pass over them. */
interface JournalReadRecords extends JournalReadAnswerBase {
  skipTo?: number;
  fullCopyMarked?: never;
}

/** The answer to a pull that said `journalLost`: every region is marked for the next resync; the journal goes on at skipTo. */
interface JournalReadFullCopy extends JournalReadAnswerBase {
  skipTo: number;
  fullCopyMarked: true;
}

export type JournalReadAnswer = JournalReadRecords | JournalReadFullCopy;

/**
 * Records read from the master journal as they go on the wire: their data as payload segments, in
 * order, with the data CRCs the journal checked them against (the link sends those, no new pass).
 */
export function wireRecords(records: readonly JournalRecord[]): { records: WireRecord[]; payload: Buffer[]; payloadCrcs: number[] } {
  const payload: Buffer[] = [];
  const payloadCrcs: number[] = [];
  const wire = records.map((r): WireRecord => {
    if (r.data) {
      payload.push(r.data);
      payloadCrcs.push(r.dataCrc);
    }
    return { kind: r.kind, seq: r.seq, epoch: r.epoch, timestampMs: r.timestampMs, lun: r.lun, offset: r.offset, length: r.length, dataBytes: r.data?.length ?? 0 };
  });
  return { records: wire, payload, payloadCrcs };
}

// ---- pairs ------------------------------------------------------------------------------

export interface PairPrepareRequest extends GroupRequest {
  svol: string;
  journal: string;
  sizeBytes: number;
  master: string;
}

/** A pair as the master holds it when it joins (the receiver sets its own localVolumeId). */
export type JoiningPair = Pick<PairMeta, 'pvolLun' | 'pvolName' | 'svolName' | 'localVolumeId' | 'sizeBytes' | 'status' | 'statusReason' | 'copyOffset' | 'copyLastSeq'>;

export interface PairJoinRequest extends GroupRequest {
  master: string;
  epoch: Epoch;
  journal: string;
  remoteJournal: string;
  pair: JoiningPair;
  /** The group's link-down policy (absent, or not one this array knows: its default). */
  fence?: FencePolicy;
  fenceAfterMs?: number;
}

export interface SplitRwRequest extends GroupRequest {
  splitSeq: number;
}

export interface DirtyRanges {
  lun: number;
  /** [offset, length] in bytes. */
  ranges: Array<[number, number]>;
}

export interface ResyncPrepareAnswer {
  dirty: DirtyRanges[];
}

export interface ResyncStartedRequest extends GroupRequest {
  resyncFromSeq: number;
}

export interface PairDisplayRequest {
  group?: string;
}

export interface PairDisplayAnswer {
  /** As `pair display --json` prints them. */
  pairs: unknown[];
}

// ---- swap, takeover, epochs --------------------------------------------------------------

export interface SwapDrainRequest extends GroupRequest {
  drainMsMax: number;
}

export interface SwapFreezeRequest extends GroupRequest {
  lagBytesMax: number;
  drainMsMax: number;
  freezeMsMax: number;
}

/** A pair as the peer must hold it after a role change (its local volume ids are its own business). */
export interface PeerPair {
  pvolLun: number;
  pvolName: string;
  svolName: string;
}

export interface SwapDemoteRequest extends GroupRequest {
  epoch: Epoch;
  firstSeq: number;
  pairs: PeerPair[];
}

export interface SwapReverseRequest extends SwapDemoteRequest {
  divergenceSeq: number;
  /** The array whose writes past divergenceSeq may be overwritten (the operator's --discard). */
  discard: string | null;
}

export interface GroupHelloRequest extends GroupRequest {
  epoch: Epoch;
  epochs: EpochChain;
}

/** The peer's view of the group; `divergence`: the host writes a fenced side holds past the divergence point. */
export interface GroupHelloAnswer {
  epoch: Epoch | null;
  role: GroupRole | null;
  epochs: EpochChain;
  divergence: { seq: number; writes: number } | null;
}

export interface GroupDivergenceRequest extends GroupRequest {
  seq: number;
}

export interface ApiForwardRequest {
  method: string;
  url: string;
  body: unknown;
}

export interface ApiForwardAnswer {
  status: number;
  json: unknown;
}

/** Every link method: its request body and its answer. */
export interface LinkMethods {
  'journal.read': { request: JournalReadRequest; answer: JournalReadAnswer };
  'pair.prepare': { request: PairPrepareRequest; answer: Ok };
  'pair.join': { request: PairJoinRequest; answer: Ok };
  'pair.split-rw': { request: SplitRwRequest; answer: Ok };
  'pair.resync-prepare': { request: GroupRequest; answer: ResyncPrepareAnswer };
  'pair.resync-started': { request: ResyncStartedRequest; answer: Ok };
  'pair.display': { request: PairDisplayRequest; answer: PairDisplayAnswer };
  'swap.drain': { request: SwapDrainRequest; answer: { lagBytes: number } };
  'swap.freeze': { request: SwapFreezeRequest; answer: { endSeq: number } };
  'swap.thaw': { request: GroupRequest; answer: Ok };
  'swap.status': { request: GroupRequest; answer: { promoted: boolean } };
  'swap.demote': { request: SwapDemoteRequest; answer: Ok };
  'swap.reverse': { request: SwapReverseRequest; answer: Ok };
  'group.hello': { request: GroupHelloRequest; answer: GroupHelloAnswer };
  'group.divergence': { request: GroupDivergenceRequest; answer: { writes: number } };
  'group.delete': { request: GroupRequest; answer: Ok };
  'api.forward': { request: ApiForwardRequest; answer: ApiForwardAnswer };
}

export type LinkMethod = keyof LinkMethods;
export type RequestOf<M extends LinkMethod> = LinkMethods[M]['request'];
export type AnswerOf<M extends LinkMethod> = LinkMethods[M]['answer'];

// ---- checks -----------------------------------------------------------------------------

/** A swap step's time bound from the peer: at most an hour. */
const durationMsMax = 3_600_000;
const recordKindSet: Record<RecordKind, true> = { write: true, zero: true, trim: true, base: true, marker: true };
const recordKinds: readonly RecordKind[] = Object.keys(recordKindSet).filter((kind): kind is RecordKind => Object.hasOwn(recordKindSet, kind));
const fencePolicySet: Record<FencePolicy, true> = { never: true, data: true };
const groupRoles: readonly GroupRole[] = ['master', 'restore'];

interface MethodChecks<M extends LinkMethod> {
  request: (body: Fields) => RequestOf<M>;
  answer: (body: Fields, payload: readonly Buffer[]) => AnswerOf<M>;
}

function group(body: Fields): GroupRequest {
  return { group: body.text('group') };
}

function ok(body: Fields): Ok {
  return body.raw('ok') === true ? OK : body.refuse('ok', 'must be true');
}

function wireRecord(r: Fields): WireRecord {
  return {
    kind: r.oneOf('kind', recordKinds), seq: r.whole('seq'), epoch: r.epoch('epoch'), timestampMs: r.whole('timestampMs'),
    lun: r.whole('lun'), offset: r.whole('offset'), length: r.whole('length'), dataBytes: r.whole('dataBytes'),
  };
}

/** Each record with data takes the next payload segment, of exactly its dataBytes. */
function checkRecordData(body: Fields, records: readonly WireRecord[], payload: readonly Buffer[]): void {
  let segment = 0;
  records.forEach((record, i) => {
    if (record.dataBytes === 0) return;
    const data = payload[segment++];
    if (!data || data.length !== record.dataBytes) body.refuse(`records[${i}]`, `(seq ${record.seq}) arrived without its ${record.dataBytes} data bytes`);
  });
}

function journalReadRequest(body: Fields): JournalReadRequest {
  const request: JournalReadRequest = {
    ...group(body), fromSeq: body.whole('fromSeq'), maxBytes: body.whole('maxBytes'), storedSeq: body.whole('storedSeq'), appliedSeq: body.whole('appliedSeq'),
  };
  if (body.has('damaged')) {
    const d = body.object('damaged');
    request.damaged = { seq: d.whole('seq'), lun: d.integer('lun'), offset: d.whole('offset'), length: d.whole('length') };
  }
  if (body.has('driveError')) {
    const e = body.object('driveError');
    request.driveError = { seq: e.whole('seq'), message: e.text('message'), resyncFromSeq: e.whole('resyncFromSeq') };
  }
  if (body.has('journalLost')) request.journalLost = body.flag('journalLost');
  if (body.has('restorePaused')) request.restorePaused = body.flag('restorePaused');
  return request;
}

function journalReadAnswer(body: Fields, payload: readonly Buffer[]): JournalReadAnswer {
  const records = body.objects('records', wireRecord);
  checkRecordData(body, records, payload);
  const pairs = body.objects('pairs', (p) => ({ pvolLun: p.whole('pvolLun'), status: p.oneOf('status', PAIR_STATUSES), statusReason: p.textOrNull('statusReason') }));
  const base = { records, masterNextSeq: body.whole('masterNextSeq'), pairs };
  // The receiver's journal goes on at skipTo after a full copy is marked: it must be there.
  if (body.has('fullCopyMarked') && body.flag('fullCopyMarked')) return { ...base, skipTo: body.whole('skipTo'), fullCopyMarked: true };
  return body.has('skipTo') ? { ...base, skipTo: body.whole('skipTo') } : base;
}

function joiningPair(p: Fields): JoiningPair {
  return {
    pvolLun: p.whole('pvolLun'), pvolName: p.text('pvolName'), svolName: p.text('svolName'), localVolumeId: p.integer('localVolumeId'), sizeBytes: p.whole('sizeBytes'),
    status: p.oneOf('status', PAIR_STATUSES), statusReason: p.textOrNull('statusReason'), copyOffset: p.whole('copyOffset'), copyLastSeq: p.wholeOrNull('copyLastSeq'),
  };
}

function pairJoinRequest(body: Fields): PairJoinRequest {
  const request: PairJoinRequest = {
    ...group(body), master: body.text('master'), epoch: body.epoch('epoch'), journal: body.text('journal'), remoteJournal: body.text('remoteJournal'),
    pair: joiningPair(body.object('pair')),
  };
  // Lenient by design: a master that sends no policy, or one this array does not know, leaves the default.
  const fence = body.raw('fence');
  const policy = Object.keys(fencePolicySet).find((known): known is FencePolicy => known === fence);
  if (policy !== undefined) request.fence = policy;
  const fenceAfterMs = body.raw('fenceAfterMs');
  if (typeof fenceAfterMs === 'number' && Number.isSafeInteger(fenceAfterMs) && fenceAfterMs > 0) request.fenceAfterMs = fenceAfterMs;
  return request;
}

/** The peer's word on ranges: those that are not whole numbers (or empty) name nothing and are left out. */
function dirtyRanges(entry: Fields): DirtyRanges {
  const ranges = entry.list('ranges', (range) => range);
  const named = ranges.filter((range): range is [number, number] => Array.isArray(range) && range.length === 2 && Number.isSafeInteger(range[0]) && Number.isSafeInteger(range[1]) && range[0] >= 0 && range[1] > 0);
  return { lun: entry.whole('lun'), ranges: named };
}

function swapDemoteRequest(body: Fields): SwapDemoteRequest {
  const pairs = body.objects('pairs', (p) => ({ pvolLun: p.whole('pvolLun'), pvolName: p.text('pvolName'), svolName: p.text('svolName') }));
  return { ...group(body), epoch: body.epoch('epoch'), firstSeq: body.whole('firstSeq'), pairs };
}

function groupHelloAnswer(body: Fields): GroupHelloAnswer {
  const divergence = body.raw('divergence') === null ? null : body.object('divergence');
  return {
    epoch: body.epochOrNull('epoch'),
    role: body.raw('role') === null ? null : body.oneOf('role', groupRoles),
    epochs: body.epochChain('epochs'),
    divergence: divergence === null ? null : { seq: divergence.whole('seq'), writes: divergence.whole('writes') },
  };
}

const checks: { [M in LinkMethod]: MethodChecks<M> } = {
  'journal.read': { request: journalReadRequest, answer: journalReadAnswer },
  'pair.prepare': {
    request: (body) => ({ ...group(body), svol: body.text('svol'), journal: body.text('journal'), sizeBytes: body.whole('sizeBytes'), master: body.text('master') }),
    answer: ok,
  },
  'pair.join': { request: pairJoinRequest, answer: ok },
  'pair.split-rw': { request: (body) => ({ ...group(body), splitSeq: body.whole('splitSeq') }), answer: ok },
  'pair.resync-prepare': { request: group, answer: (body) => ({ dirty: body.objects('dirty', dirtyRanges) }) },
  'pair.resync-started': { request: (body) => ({ ...group(body), resyncFromSeq: body.whole('resyncFromSeq') }), answer: ok },
  'pair.display': {
    request: (body) => (body.has('group') ? { group: body.text('group') } : {}),
    answer: (body) => ({ pairs: body.list('pairs', (entry) => entry) }),
  },
  'swap.drain': {
    request: (body) => ({ ...group(body), drainMsMax: body.ms('drainMsMax', durationMsMax) }),
    answer: (body) => ({ lagBytes: body.whole('lagBytes') }),
  },
  'swap.freeze': {
    request: (body) => ({
      ...group(body), lagBytesMax: body.whole('lagBytesMax'), drainMsMax: body.ms('drainMsMax', durationMsMax), freezeMsMax: body.ms('freezeMsMax', durationMsMax),
    }),
    answer: (body) => ({ endSeq: body.whole('endSeq') }),
  },
  'swap.thaw': { request: group, answer: ok },
  'swap.status': { request: group, answer: (body) => ({ promoted: body.flag('promoted') }) },
  'swap.demote': { request: swapDemoteRequest, answer: ok },
  'swap.reverse': {
    request: (body) => ({ ...swapDemoteRequest(body), divergenceSeq: body.whole('divergenceSeq'), discard: body.textOrNull('discard') }),
    answer: ok,
  },
  'group.hello': {
    request: (body) => ({ ...group(body), epoch: body.epoch('epoch'), epochs: body.epochChain('epochs') }),
    answer: groupHelloAnswer,
  },
  'group.divergence': { request: (body) => ({ ...group(body), seq: body.whole('seq') }), answer: (body) => ({ writes: body.whole('writes') }) },
  'group.delete': { request: group, answer: ok },
  'api.forward': {
    request: (body) => ({ method: body.text('method'), url: body.text('url'), body: body.raw('body') }),
    answer: (body) => ({ status: body.whole('status', 599), json: body.raw('json') }),
  },
};

export function isLinkMethod(name: string): name is LinkMethod {
  return Object.hasOwn(checks, name);
}

/** The method names, as docs/link-protocol.md lists them. */
export const LINK_METHODS: readonly LinkMethod[] = Object.keys(checks).filter(isLinkMethod);

/** A request's body from the peer, checked: BAD_REQUEST naming the field (the peer is told). */
export function checkRequest<M extends LinkMethod>(method: M, body: unknown): RequestOf<M> {
  const refuse: Refuse = (field, problem) => {
    throw new TwinstoreError('BAD_REQUEST', `${field} ${problem}`, { field });
  };
  return checks[method].request(new Fields(body, '', refuse));
}

/** An answer from the peer that failed its check here (not an error the peer answered with). */
export class AnswerRefusedError extends TwinstoreError {
  constructor(method: LinkMethod, field: string, problem: string) {
    super('LINK_PROTOCOL', `${method} answer: ${field} ${problem}`, { field });
  }
}

/** An answer from the peer, checked: LINK_PROTOCOL naming the method and the field. */
export function checkAnswer<M extends LinkMethod>(method: M, body: unknown, payload: readonly Buffer[]): AnswerOf<M> {
  const refuse: Refuse = (field, problem) => {
    throw new AnswerRefusedError(method, field, problem);
  };
  return checks[method].answer(new Fields(body, '', refuse), payload);
}

/** Sends a request to the peer and checks its answer before the caller sees it. */
export async function linkRequest<M extends LinkMethod>(peer: PeerChannel, method: M, body: RequestOf<M>, options: { timeoutMs?: number } = {}): Promise<PeerAnswer & { body: AnswerOf<M> }> {
  const response = await peer.request(method, body, [], options);
  return {
    body: checkAnswer(method, response.body, response.payload), payload: response.payload,
    ...(response.payloadCrcs === undefined ? {} : { payloadCrcs: response.payloadCrcs }),
  };
}

/** What a handler answers: the body, and for journal.read the records' data and their checked CRCs. */
export interface LinkAnswer<M extends LinkMethod> {
  body: AnswerOf<M>;
  payload?: Buffer[];
  payloadCrcs?: readonly number[];
}

/** One handler per method, each given the request already checked. */
export type LinkHandlers = { [M in LinkMethod]: (body: RequestOf<M>, peer: string) => Promise<LinkAnswer<M>> };

/** The answering side: an unknown method or a body that fails its check is refused with BAD_REQUEST. */
export async function answerLinkRequest(handlers: LinkHandlers, peer: string, request: { method: string; body: unknown }): Promise<PeerAnswer> {
  if (!isLinkMethod(request.method)) throw new TwinstoreError('BAD_REQUEST', `unknown link method ${request.method} from ${peer}`);
  return answerWith(handlers, request.method, peer, request.body);
}

async function answerWith<M extends LinkMethod>(handlers: LinkHandlers, method: M, peer: string, body: unknown): Promise<PeerAnswer> {
  const handler: LinkHandlers[M] = handlers[method];
  const answer = await handler(checkRequest(method, body), peer);
  return { body: answer.body, payload: answer.payload ?? [], ...(answer.payloadCrcs === undefined ? {} : { payloadCrcs: answer.payloadCrcs }) };
}
