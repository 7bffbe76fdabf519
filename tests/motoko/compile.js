// Compiles Motoko sources with the npm `motoko` package (moc compiled to JavaScript).
// Usage: node compile.js MOTOKO_PACKAGE_DIR < job.json, where job.json is
// {"jobs": [{"source": "...mo text...", "out": "path.wasm", "public_metadata": ["candid:service"]}]}.
// Prints one JSON line: the compiler's version, and per job its Candid interface.
const fs = require('fs');
const mo = require(process.argv[2]);
const { jobs } = JSON.parse(fs.readFileSync(0, 'utf8'));
const results = [];
for (const job of jobs) {
  mo.setPublicMetadata(job.public_metadata);
  mo.write('Main.mo', job.source);
  const output = mo.wasm('Main.mo', 'ic');
  fs.writeFileSync(job.out, output.wasm);
  results.push({ candid: output.candid });
}
process.stdout.write(JSON.stringify({ version: mo.version, results }) + '\n');
