// Vitest settings for the Durable Streams conformance run (see README.md).
// One test file in one worker: the suite talks to one live server and several tests measure
// timing (long-poll, SSE, TTL), so no parallel files. testTimeout is 30 s instead of vitest's
// 5 s default to leave room for a cluster that forwards every request (the reference server
// gives the same result with either).
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    fileParallelism: false,
    reporters: ["default", "./progress-reporter.mjs"],
  },
})
