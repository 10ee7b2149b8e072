// A grpc-js xDS client (@grpc/grpc-js-xds) for the proxy's tests. It
// dials xds:///TARGET (bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG), reads
// commands on stdin and answers each with one JSON line on stdout:
//   run N [header value]   N UnaryCalls → {"counts": {backend: calls}, "errors": n}
//   until NAME             calls until NAME answers → {"counts": …}
// Messages are raw bytes: the response's hostname (SimpleResponse field
// 6) is read without generated code.
const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();
const readline = require('readline');

const client = new grpc.Client('xds:///' + process.argv[2], grpc.credentials.createInsecure());

function hostname(buf) {
  let i = 0;
  const varint = () => { let v = 0, s = 0, b; do { b = buf[i++]; v += (b & 0x7f) * 2 ** s; s += 7; } while (b & 0x80); return v; };
  while (i < buf.length) {
    const key = varint(), field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) { varint(); continue; }
    if (wire === 2) { const n = varint(); if (field === 6) return buf.slice(i, i + n).toString(); i += n; continue; }
    if (wire === 1) { i += 8; continue; }
    if (wire === 5) { i += 4; continue; }
    return '';
  }
  return '';
}

function call(md) {
  return new Promise((resolve) => {
    client.makeUnaryRequest('/grpc.testing.TestService/UnaryCall', (b) => b, (b) => b, Buffer.alloc(0), md,
      { deadline: Date.now() + 30000 }, (err, resp) => resolve(err ? { err: err.code, details: err.details } : { host: hostname(resp) }));
  });
}

const rl = readline.createInterface({ input: process.stdin });
const queue = [];
let busy = false;
rl.on('line', (line) => { queue.push(line.trim().split(/\s+/)); pump(); });
rl.on('close', () => { queue.push(['exit']); pump(); });

async function pump() {
  if (busy) return;
  busy = true;
  while (queue.length) {
    const [cmd, a, h, v] = queue.shift();
    if (cmd === 'exit') { client.close(); process.exit(0); }
    const md = new grpc.Metadata();
    if (h) md.set(h, v);
    const out = { counts: {}, errors: 0 };
    for (let k = 0; ; k++) {
      if (cmd === 'run' && k >= Number(a)) break;
      const r = await call(md);
      if (r.err !== undefined) { out.errors++; out.lastError = r.err; out.details = r.details; if (cmd === 'until' && out.errors > 1000) break; continue; }
      out.counts[r.host] = (out.counts[r.host] || 0) + 1;
      if (cmd === 'until' && r.host === a) break;
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
  busy = false;
}
