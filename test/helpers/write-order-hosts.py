#!/usr/bin/python3
# The hosts of the write-order tests (docs/architecture.md §10), written against libnbd,
# not our code. One process drives every volume over several NBD connections
# each, from one thread with a select() loop, at a bounded queue depth per
# connection. Each write covers 1-16 blocks of 4 KiB at a random place in a
# small hot area, so blocks are rewritten often and writes overlap in flight.
# Every block a write covers is stamped: magic, volume, write id, block number,
# a filler derived from them, and a CRC-32 of it all, so a reader can tell
# which write a block holds. Some FLUSHes go out too.
#
# The log (JSON lines, one file) is what the hosts saw, on CLOCK_MONOTONIC in
# microseconds (the clock the test process reads too):
#   {"t":"w","id":…,"v":vol,"b":firstBlock,"n":blocks,"c":conn,"i":issue}
#   {"t":"f","id":…,"v":vol,"c":conn,"i":issue}                 a FLUSH
#   {"t":"a","id":…,"a":ack}                                     acknowledged
#   {"t":"e","id":…,"e":end,"err":…}                             failed: not acknowledged
# The issue line is flushed to the file before the request is sent, so any
# block a reader finds already has its write in the log. Issue times are
# taken before sending and ack times after the reply is seen: both err on the
# side of allowing more, never less.
#
# Control, one word per line on stdin: "hold" (send nothing new), "go" (send
# again; connections that failed reconnect only after a "go" that came after
# they failed), "stop" (drain and exit). On stdout, JSON events: "up"/"down"
# per connection, "held" once nothing is in flight, "stopped".
# A connection that fails (the array was killed) logs every request it had in
# flight as failed, says "down", and waits for the next "go".
#
# With a "script" in the config, the requests it lists are sent instead, one
# at a time, each acknowledged before the next, and the process exits.
#
# Failover (for swaps and takeovers): "alternates" gives each volume more URIs
# (the same volume as another array exports it). With "autoReconnect", a
# connection that failed reconnects by itself, without waiting for a "go",
# every 10 ms, to the next URI in turn; a read-only export counts as a failed
# connect (a P-VOL that became an S-VOL). Write lines then carry "s", the
# index of the URI the write went to (0: the one in "volumes").
#
# Usage: write-order-hosts.py CONFIG.json (fields in Hosts.__init__).

import json
import os
import random
import select
import struct
import sys
import time
import zlib

import nbd

BLOCK = 4096
MAGIC = 0x54574F43  # "TWOC"
FILL_BYTES = BLOCK - 24 - 4


def now_us():
    return time.monotonic_ns() // 1000


def stamp(vol, wid, block):
    head = struct.pack('<IIQQ', MAGIC, vol, wid, block)
    fill = (struct.pack('<QQ', wid, (vol << 48) | block) * (FILL_BYTES // 16 + 1))[:FILL_BYTES]
    body = head + fill
    return body + struct.pack('<I', zlib.crc32(body) & 0xFFFFFFFF)


def emit(event):
    sys.stdout.write(json.dumps(event) + '\n')
    sys.stdout.flush()


class Log:
    def __init__(self, path):
        self.file = open(path, 'a', buffering=1 << 20)

    def line(self, record):
        self.file.write(json.dumps(record, separators=(',', ':')) + '\n')

    def flush(self):
        self.file.flush()


class Connection:
    def __init__(self, index, vol, uris, hosts):
        self.index = index
        self.vol = vol
        self.uris = uris
        self.site = 0  # index into uris
        self.hosts = hosts
        self.handle = None
        self.inflight = {}  # cookie -> (id, buffer)
        self.down_at_go = -1  # the go count when it went down; reconnect after a later go
        self.retry_at = 0.0
        self.tokens = float(hosts.queue_depth)
        self.last_refill = time.monotonic()

    def connect(self):
        """Connects to the current URI; False (and the next URI is current) if it is read-only in failover mode."""
        h = nbd.NBD()
        try:
            h.connect_uri(self.uris[self.site])
            if self.hosts.auto_reconnect and h.is_read_only():
                h.shutdown()
                self.next_site()
                return False
        except nbd.Error:
            self.next_site()
            raise
        self.handle = h
        self.tokens = float(self.hosts.queue_depth)
        emit({'event': 'up', 'conn': self.index, 'site': self.site})
        return True

    def next_site(self):
        if self.hosts.auto_reconnect:
            self.site = (self.site + 1) % len(self.uris)

    def fail(self, reason):
        end = now_us()
        for _cookie, (wid, _buf) in self.inflight.items():
            self.hosts.log.line({'t': 'e', 'id': wid, 'e': end, 'err': reason})
        self.inflight.clear()
        self.hosts.log.flush()
        try:
            self.handle.close()
        except Exception:
            pass
        self.handle = None
        self.down_at_go = self.hosts.go_count
        self.next_site()
        emit({'event': 'down', 'conn': self.index, 'reason': reason})

    def refill(self):
        t = time.monotonic()
        rate = self.hosts.rate
        self.tokens = min(float(self.hosts.queue_depth), self.tokens + (t - self.last_refill) * rate)
        self.last_refill = t

    def issue(self):
        """Sends writes (and now and then a FLUSH) up to the queue depth and the rate."""
        hosts = self.hosts
        self.refill()
        sent = []
        while len(self.inflight) < hosts.queue_depth and self.tokens >= 1:
            self.tokens -= 1
            wid = hosts.next_id()
            if hosts.rng.random() < hosts.flush_share:
                record = {'t': 'f', 'id': wid, 'v': self.vol, 'c': self.index, 'i': 0}
                sent.append((wid, record, None, None))
                continue
            blocks = hosts.rng.randint(hosts.blocks_min, hosts.blocks_max)
            first = hosts.rng.randrange(0, hosts.hot_blocks - blocks + 1)
            data = b''.join(stamp(self.vol, wid, first + k) for k in range(blocks))
            record = {'t': 'w', 'id': wid, 'v': self.vol, 'b': first, 'n': blocks, 'c': self.index, 'i': 0}
            if len(self.uris) > 1:
                record['s'] = self.site
            sent.append((wid, record, nbd.Buffer.from_bytearray(data), first * BLOCK))
        self.send(sent)

    def send(self, sent):
        if not sent:
            return
        for _wid, record, _buf, _offset in sent:
            record['i'] = now_us()
            self.hosts.log.line(record)
        self.hosts.log.flush()
        for wid, _record, buf, offset in sent:
            try:
                cookie = self.handle.aio_flush() if buf is None else self.handle.aio_pwrite(buf, offset)
            except nbd.Error as error:
                self.hosts.log.line({'t': 'e', 'id': wid, 'e': now_us(), 'err': str(error)})
                self.fail(str(error))
                return
            self.inflight[cookie] = (wid, buf)

    def reap(self):
        done = []
        for cookie, (wid, _buf) in self.inflight.items():
            try:
                if self.handle.aio_command_completed(cookie):
                    done.append((cookie, wid, None))
            except nbd.Error as error:
                done.append((cookie, wid, str(error)))
        t = now_us()
        for cookie, wid, error in done:
            del self.inflight[cookie]
            self.hosts.log.line({'t': 'a', 'id': wid, 'a': t} if error is None else {'t': 'e', 'id': wid, 'e': t, 'err': error})
        if done:
            self.hosts.log.flush()


class Hosts:
    def __init__(self, config):
        self.log = Log(config['log'])
        self.queue_depth = int(config.get('queueDepth', 16))
        self.rate = float(config.get('writesPerSecondPerConnection', 200))
        self.hot_blocks = int(config['hotBlocks'])
        self.blocks_min = int(config.get('blocksMin', 1))
        self.blocks_max = int(config.get('blocksMax', 16))
        self.flush_share = float(config.get('flushShare', 0.02))
        self.rng = random.Random(int(config.get('seed', 1)))
        self.id_counter = int(config.get('firstId', 1))
        self.go_count = 0
        self.held = False
        self.stopping = False
        self.held_said = False
        per_volume = int(config.get('connectionsPerVolume', 2))
        self.connections = []
        alternates = config.get('alternates') or [[] for _ in config['volumes']]
        for vol, uri in enumerate(config['volumes']):
            for _ in range(per_volume):
                self.connections.append(Connection(len(self.connections), vol, [uri] + alternates[vol], self))
        self.deadline = time.monotonic() + float(config['seconds']) if config.get('seconds') else None
        # [[volume, firstBlock, blocks] | ["flush", volume], ...]: run in order at queue depth 1, then exit.
        self.script = config.get('script')
        self.auto_reconnect = bool(config.get('autoReconnect', False))

    def next_id(self):
        wid = self.id_counter
        self.id_counter += 1
        return wid

    def control(self, word):
        if word == 'hold':
            self.held = True
            self.held_said = False
        elif word == 'go':
            self.held = False
            self.go_count += 1
        elif word == 'stop':
            self.stopping = True

    def run_script(self, script):
        """One request at a time, in order, each acknowledged before the next is sent."""
        first = {}
        for conn in self.connections:
            first.setdefault(conn.vol, conn)
        for item in script:
            conn = first[item[1] if item[0] == 'flush' else item[0]]
            wid = self.next_id()
            if item[0] == 'flush':
                self.log.line({'t': 'f', 'id': wid, 'v': conn.vol, 'c': conn.index, 'i': now_us()})
                self.log.flush()
                conn.handle.flush()
            else:
                vol, first_block, blocks = item
                data = b''.join(stamp(vol, wid, first_block + k) for k in range(blocks))
                self.log.line({'t': 'w', 'id': wid, 'v': vol, 'b': first_block, 'n': blocks, 'c': conn.index, 'i': now_us()})
                self.log.flush()
                conn.handle.pwrite(data, first_block * BLOCK)
            self.log.line({'t': 'a', 'id': wid, 'a': now_us()})
        self.log.flush()
        for conn in self.connections:
            conn.handle.shutdown()
        emit({'event': 'stopped', 'nextId': self.id_counter})

    def run(self):
        for conn in self.connections:
            conn.connect()
        if self.script is not None:
            self.run_script(self.script)
            return
        stdin_open = True
        drain_deadline = None
        while True:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.stopping = True
            if self.stopping and drain_deadline is None:
                drain_deadline = time.monotonic() + 10
            inflight = sum(len(c.inflight) for c in self.connections if c.handle is not None)
            if self.stopping and (inflight == 0 or time.monotonic() > drain_deadline):
                break
            if self.held and inflight == 0 and not self.held_said:
                self.held_said = True
                emit({'event': 'held'})
            for conn in self.connections:
                ready = conn.handle is None and not self.held and not self.stopping and (self.auto_reconnect or self.go_count > conn.down_at_go)
                if ready and time.monotonic() >= conn.retry_at:
                    try:
                        if not conn.connect():
                            conn.retry_at = time.monotonic() + 0.01
                    except nbd.Error as error:
                        conn.retry_at = time.monotonic() + (0.01 if self.auto_reconnect else 0.1)
                        emit({'event': 'connect-failed', 'conn': conn.index, 'reason': str(error)})
                if conn.handle is not None and not self.held and not self.stopping:
                    conn.issue()
            self.wait(stdin_open)
            if not self.poll_stdin():
                stdin_open = False
        for conn in self.connections:
            if conn.handle is not None:
                if conn.inflight:
                    conn.fail('stopped with requests in flight')
                else:
                    try:
                        conn.handle.shutdown()
                    except nbd.Error:
                        pass
        self.log.flush()
        emit({'event': 'stopped', 'nextId': self.id_counter})

    def wait(self, stdin_open):
        readers, writers, owners = [], [], {}
        for conn in self.connections:
            h = conn.handle
            if h is None:
                continue
            try:
                fd = h.aio_get_fd()
                direction = h.aio_get_direction()
            except nbd.Error as error:
                conn.reap()
                conn.fail(str(error))
                continue
            owners[fd] = conn
            if direction & nbd.AIO_DIRECTION_READ:
                readers.append(fd)
            if direction & nbd.AIO_DIRECTION_WRITE:
                writers.append(fd)
        if stdin_open:
            readers.append(sys.stdin.fileno())
        readable, writable, _ = select.select(readers, writers, [], 0.005)
        for fd in set(readable) | set(writable):
            conn = owners.get(fd)
            if conn is None or conn.handle is None:
                continue
            try:
                if fd in readable:
                    conn.handle.aio_notify_read()
                if fd in writable and conn.handle is not None:
                    conn.handle.aio_notify_write()
            except nbd.Error as error:
                conn.reap()
                conn.fail(str(error))
                continue
            conn.reap()
            if conn.handle is not None and (conn.handle.aio_is_dead() or conn.handle.aio_is_closed()):
                conn.fail('connection closed')

    def poll_stdin(self):
        fd = sys.stdin.fileno()
        readable, _, _ = select.select([fd], [], [], 0)
        if not readable:
            return True
        chunk = os.read(fd, 4096)
        if chunk == b'':
            self.stopping = True
            return False
        for word in chunk.decode().split():
            self.control(word)
        return True


def main():
    with open(sys.argv[1]) as f:
        config = json.load(f)
    hosts = Hosts(config)
    import signal
    signal.signal(signal.SIGTERM, lambda *_: hosts.control('stop'))
    signal.signal(signal.SIGINT, lambda *_: hosts.control('stop'))
    hosts.run()


if __name__ == '__main__':
    main()
