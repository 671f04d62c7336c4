// Goal: the event bus keeps exactly the last eventsKeptMax events for clients
// that come back, and never hands a client a partial backlog: an id older than
// the kept events, of another run, or not reached yet gets undefined (the
// stream then sends `resynced` and a fresh snapshot).
// Method: the bus module itself, past its bound.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventBus, eventsKeptMax } from '../../src/events/bus.js';

test('the bus keeps the last eventsKeptMax events and refuses ids it cannot answer in full', () => {
  const bus = new EventBus();
  const heard: string[] = [];
  const unsubscribe = bus.subscribe((event) => heard.push(event.id));
  assert.deepEqual(bus.since(bus.lastId), [], 'nothing after the newest id');
  const ids: string[] = [];
  for (let i = 0; i < eventsKeptMax + 10; i++) {
    bus.publish('tick', { i });
    ids.push(bus.lastId);
  }
  assert.deepEqual(heard, ids, 'every event reaches the listener, in order');
  assert.equal(bus.since(ids[0]!), undefined, 'the events after the first are no longer all kept');
  const oldestAnswerable = ids[9]!;
  assert.equal(bus.since(oldestAnswerable)!.length, eventsKeptMax, 'from the id just before the oldest kept: all of them');
  assert.equal(bus.since(ids[8]!), undefined, 'one further back: not all kept');
  assert.deepEqual(bus.since(ids.at(-3)!)!.map((e) => e.id), ids.slice(-2));
  assert.equal(bus.since(`${bus.run}.${eventsKeptMax + 11}`), undefined, 'an id not reached yet');
  assert.equal(bus.since(`other.5`), undefined, 'an id of another run');
  assert.equal(bus.since('garbage'), undefined);
  unsubscribe();
  bus.publish('tick', {});
  assert.equal(heard.length, ids.length, 'no event after unsubscribe');
});
