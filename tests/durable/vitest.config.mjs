// Vitest settings for the Durable Streams conformance run (see README.md).
// One test file, run in one worker: the suite talks to one live server and
// several tests measure timing (long-poll, SSE), so no parallel files.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    fileParallelism: false,
    reporters: ["default"],
  },
})
