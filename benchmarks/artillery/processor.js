'use strict';
// Functions echo.yml calls.  The engine has no message latency of its own, so
// each round trip is timed here and reported as the summary `echo.latency_ms`.
// Every virtual user ends its loop once the file NOVA_BENCH_STOP_FILE exists
// (the benchmark creates it when its measured window closes) or at the epoch
// milliseconds NOVA_BENCH_END_MS, whichever comes first, so the run ends by
// itself and Artillery writes its report.

const fs = require('fs');

const STOP_FILE = process.env.NOVA_BENCH_STOP_FILE || '';
const END_MS = Number(process.env.NOVA_BENCH_END_MS || 0);
let stopped = false;

// Polled on a timer, not per message: a stat() per round trip would be charged
// to Artillery's CPU time.  unref(): the timer never keeps a worker alive.
const poll = setInterval(() => {
  if (Date.now() >= END_MS || (STOP_FILE && fs.existsSync(STOP_FILE))) {
    stopped = true;
    clearInterval(poll);
  }
}, 100);
poll.unref();

function stamp(context, events, done) {
  context.vars.sentAt = process.hrtime.bigint();
  return done();
}

function recordEcho(context, events, done) {
  const ns = process.hrtime.bigint() - context.vars.sentAt;
  events.emit('histogram', 'echo.latency_ms', Number(ns) / 1e6);
  return done();
}

function untilStopped(context, next) {
  return next(!stopped);
}

module.exports = { stamp, recordEcho, untilStopped };
