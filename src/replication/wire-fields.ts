// A reader of the JSON objects the peer array sends over the link (protocol.ts reads every
// request and answer with it). The peer may run another version, or lie, so nothing it sends is
// believed before its shape is checked: each read returns the field typed, or calls `refuse`
// with the field's path (`pairs[0].status`) and what is wrong with it. The caller's `refuse`
// picks the error: BAD_REQUEST for a request, LINK_PROTOCOL for an answer.

import type { Epoch } from '../journal/index.js';

/** Throws the caller's error for `field`; `problem` reads after the field's name ("must be …"). */
export type Refuse = (field: string, problem: string) => never;

function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** One JSON object from the peer, its fields read by name. */
export class Fields {
  private readonly values: Record<string, unknown>;

  /** `path`: where the object sits in the body ('' for the body itself). */
  constructor(value: unknown, private readonly path: string, private readonly refuseWith: Refuse) {
    this.values = isObject(value) ? Object.fromEntries(Object.entries(value)) : refuseWith(path === '' ? 'body' : path, 'must be an object');
  }

  private name(field: string): string {
    return this.path === '' ? field : `${this.path}.${field}`;
  }

  refuse(field: string, problem: string): never {
    return this.refuseWith(this.name(field), problem);
  }

  /** The field is there (JSON has no undefined: a missing key). */
  has(field: string): boolean {
    return this.values[field] !== undefined;
  }

  /** The field as sent, unchecked: for what is passed on whole (api.forward's body). */
  raw(field: string): unknown {
    return this.values[field];
  }

  text(field: string): string {
    const value = this.values[field];
    return typeof value === 'string' ? value : this.refuse(field, 'must be a string');
  }

  textOrNull(field: string): string | null {
    return this.values[field] === null ? null : this.text(field);
  }

  flag(field: string): boolean {
    const value = this.values[field];
    return typeof value === 'boolean' ? value : this.refuse(field, 'must be true or false');
  }

  /** A safe integer from 0 to `max`. */
  whole(field: string, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.values[field];
    if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= max) return value;
    return this.refuse(field, max === Number.MAX_SAFE_INTEGER ? 'must be a whole number >= 0' : `must be a whole number from 0 to ${max}`);
  }

  wholeOrNull(field: string): number | null {
    return this.values[field] === null ? null : this.whole(field);
  }

  /** A duration: a whole number of ms from 0 to `max`. */
  ms(field: string, max: number): number {
    const value = this.values[field];
    if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= max) return value;
    return this.refuse(field, `must be a whole number of ms from 0 to ${max}`);
  }

  /** A safe integer of either sign (a damaged record's LUN is -1 when its header named none). */
  integer(field: string): number {
    const value = this.values[field];
    return typeof value === 'number' && Number.isSafeInteger(value) ? value : this.refuse(field, 'must be a whole number');
  }

  oneOf<T extends string>(field: string, choices: readonly T[]): T {
    const value = this.values[field];
    return choices.find((choice) => choice === value) ?? this.refuse(field, `must be one of ${choices.join(', ')}`);
  }

  object(field: string): Fields {
    return new Fields(this.values[field], this.name(field), this.refuseWith);
  }

  /** An array, each item read by `item` with its own path. */
  list<T>(field: string, item: (value: unknown, path: string) => T): T[] {
    const value = this.values[field];
    if (!Array.isArray(value)) return this.refuse(field, 'must be an array');
    return value.map((entry: unknown, i) => item(entry, `${this.name(field)}[${i}]`));
  }

  /** An array of objects. */
  objects<T>(field: string, item: (fields: Fields) => T): T[] {
    return this.list(field, (entry, path) => item(new Fields(entry, path, this.refuseWith)));
  }

  /** An epoch's shape; whether it can be stored is the journal's check (journal/epoch.ts). */
  epoch(field: string): Epoch {
    const epoch = this.object(field);
    return { counter: epoch.whole('counter'), arrayId: epoch.text('arrayId'), nonce: epoch.text('nonce') };
  }

  epochOrNull(field: string): Epoch | null {
    return this.values[field] === null ? null : this.epoch(field);
  }

  /** An epoch chain: each epoch with the first seq written in it. */
  epochChain(field: string): Array<{ epoch: Epoch; firstSeq: number }> {
    return this.objects(field, (entry) => ({ epoch: entry.epoch('epoch'), firstSeq: entry.whole('firstSeq') }));
  }
}
