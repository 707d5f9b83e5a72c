// A Durable Streams client against Spool: append JSON tokens (as an LLM would stream them), read
// the stream from the start (offset -1), tail it live, drop the connection, keep appending, and
// resume from the saved offset without a gap or a duplicate.
//
//   SPOOL_URL=http://127.0.0.1:8080 node example.mjs
//
// Exits 0 when every check holds, 1 otherwise (tests/durable/test_example_client.sh runs it).
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client";

const base = (process.env.SPOOL_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const url = `${base}/v1/stream/examples/chat-${Date.now()}/tokens`;
const headers = process.env.SPOOL_TOKEN ? { Authorization: `Bearer ${process.env.SPOOL_TOKEN}` } : {};
const tokens = (from, n) => Array.from({ length: n }, (_, i) => ({ i: from + i, t: `tok${from + i}` }));

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

// Tails the stream live from `offset` until `want` JSON items arrived, then drops the connection
// (aborts). Returns the items and the offset after the last batch: what a client persists to
// resume later.
async function tail(offset, { want, live = "sse" }) {
  const abort = new AbortController();
  const items = [];
  let last = offset;
  const res = await stream({ url, headers, offset, live, signal: abort.signal });
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tail: ${items.length}/${want} items after 10 s`)), 10000);
      res.subscribeJson(async (batch) => {
        items.push(...batch.items);
        last = batch.offset;
        if (items.length >= want) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    abort.abort();
  }
  return { items, last };
}

async function main() {
  const handle = await DurableStream.create({ url, headers, contentType: "application/json" });
  console.log(`stream ${url}`);

  // 1. append tokens with an idempotent producer (batched, exactly once)
  const producer = new IdempotentProducer(handle, "example-writer", {
    autoClaim: true,
    onError: (err) => console.error("append failed:", err),
  });
  for (const tok of tokens(0, 5)) producer.append(JSON.stringify(tok));
  await producer.flush();

  // 2. read everything from the beginning (offset -1), catch-up only
  const all = await (await stream({ url, headers, offset: "-1", live: false })).json();
  check(JSON.stringify(all) === JSON.stringify(tokens(0, 5)), "read from -1 returns the 5 tokens in order");

  // 3. tail live from the tail offset while more tokens are appended
  const { offset: tailOffset } = await handle.head();
  const live = tail(tailOffset, { want: 3 });
  for (const tok of tokens(5, 3)) producer.append(JSON.stringify(tok));
  await producer.flush();
  const got = await live;
  check(JSON.stringify(got.items) === JSON.stringify(tokens(5, 3)), "live tail receives the 3 new tokens");

  // 4. a long-poll reader gets 2 tokens, saves its offset, and its connection drops; 5 more
  //    tokens are appended while it is away; it resumes from the saved offset and gets exactly
  //    those
  const first = tail(got.last, { want: 2, live: "long-poll" });
  for (const tok of tokens(8, 2)) producer.append(JSON.stringify(tok));
  await producer.flush();
  const part = await first;
  check(part.items.length === 2, "reader saw 2 tokens before its connection dropped");
  for (const tok of tokens(10, 5)) producer.append(JSON.stringify(tok));
  await producer.flush();
  const rest = await tail(part.last, { want: 5 });
  const seen = [...part.items, ...rest.items].map((x) => x.i);
  check(JSON.stringify(seen) === JSON.stringify([8, 9, 10, 11, 12, 13, 14]),
        "resume from the saved offset: no gap, no duplicate");

  // 5. close the stream: readers see the end
  await producer.close();
  await handle.close();
  const head = await handle.head();
  check(head.streamClosed === true, "stream is closed");
  const final = await (await stream({ url, headers, offset: "-1", live: false })).json();
  check(final.length === 15, "15 tokens in the stream");

  // 6. the stream is a Spool channel: its tokens are ordinary messages of channel
  //    examples/chat-<ts>/tokens (REST history here; WebSocket/SSE subscribers see them live)
  const channel = encodeURIComponent(new URL(url).pathname.slice("/v1/stream/".length));
  const hist = await (await fetch(`${base}/v1/channels/${channel}/messages?limit=100`, { headers })).json();
  const msgs = hist.items.filter((m) => m.action === "message.create").map((m) => m.data.i);
  check(JSON.stringify(msgs) === JSON.stringify([...Array(15).keys()]),
        "the same 15 tokens are messages of the Spool channel");
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
