// The hand-written .d.ts files compile and describe the documented usage:
// tsc type-checks test/types/usage.ts against the package's own exports.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

test("TypeScript types accept the documented usage and reject misuse", () => {
  const tsc = resolve(packageDir, "node_modules/typescript/bin/tsc");
  const run = spawnSync(process.execPath, [tsc, "-p", "test/types/tsconfig.json"], {
    cwd: packageDir,
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(run.error, undefined, `tsc did not run: ${run.error}`);
  assert.equal(run.status, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});
