// Starts the Durable Streams reference server (@durable-streams/server, in-memory store)
// on 127.0.0.1:PORT, to check the conformance harness itself.
//   node reference-server.mjs [PORT] [LONG_POLL_TIMEOUT_MS]
// DS_REFERENCE_WEBHOOKS=1 enables its webhook subscriptions (for DS_SUBSCRIPTIONS=1 runs).
// Prints "listening http://127.0.0.1:PORT" once ready; stops on SIGTERM/SIGINT.
import { DurableStreamTestServer } from "@durable-streams/server"

const port = Number(process.argv[2] || 4437)
const longPollTimeout = Number(process.argv[3] || 500)
const server = new DurableStreamTestServer({
  host: "127.0.0.1",
  port,
  longPollTimeout,
  webhooks: process.env.DS_REFERENCE_WEBHOOKS === "1",
})
const url = await server.start()
console.log(`listening ${url}`)

let stopping = false
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, async () => {
    if (stopping) return
    stopping = true
    await server.stop()
    process.exit(0)
  })
}
