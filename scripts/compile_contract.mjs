#!/usr/bin/env node
// Compile ca_service/anchor/contracts/CheckpointAnchor.sol with the pinned solcjs package
// (package.json) and write the artifact next to it. `--check` compiles and exits 1 when the
// committed artifact differs (used by tests/unit/anchor/test_artifact.py).
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(root, "ca_service", "anchor", "contracts");
const name = "CheckpointAnchor";
const sourceName = `${name}.sol`;
const artifactPath = join(dir, `${name}.json`);

// Cancun: supported by py-evm (embedded chain), Anvil and current EVM chains.
const settings = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 10000 },
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const input = {
  language: "Solidity",
  sources: { [sourceName]: { content: readFileSync(join(dir, sourceName), "utf8") } },
  settings,
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(`${e.formattedMessage}\n`);
if (errors.length) process.exit(2);

const contract = output.contracts[sourceName][name];
const artifact = {
  contractName: name,
  sourceName,
  compiler: { name: "solc", package: "solc (npm, solcjs)", version: solc.version() },
  settings: { evmVersion: settings.evmVersion, optimizer: settings.optimizer, metadata: settings.metadata },
  abi: contract.abi,
  bytecode: `0x${contract.evm.bytecode.object}`,
  deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
};
const text = `${JSON.stringify(artifact, null, 2)}\n`;

if (process.argv.includes("--check")) {
  const current = readFileSync(artifactPath, "utf8");
  if (current !== text) {
    process.stderr.write(`${artifactPath} is stale: run node scripts/compile_contract.mjs\n`);
    process.exit(1);
  }
  process.stdout.write("artifact is current\n");
} else {
  writeFileSync(artifactPath, text);
  process.stdout.write(`wrote ${artifactPath} (solc ${solc.version()})\n`);
}
