// seed_schema: validates server messages against the Nova guide's seed schema with zod,
// exactly as its frontend does (issue 16; SPEC 3.3):
//   z.object({type: z.string(), timestamp: z.string(), client_id: z.string(),
//             channel: z.string().nullable(), data: z.object({}).passthrough()})
// Usage: node tests/lib/seed_schema.mjs FILE, FILE a JSON array of the messages (a string
// item is a frame that was not JSON: it fails). Prints one JSON object on stdout:
// {"validated": N, "failed": [{"index", "message", "issues"}], "types": {type: count}}.
import { readFileSync } from "node:fs";
import { z } from "zod";

const Seed = z.object({
  type: z.string(),
  timestamp: z.string(),
  client_id: z.string(),
  channel: z.string().nullable(),
  data: z.object({}).passthrough(),
});

const messages = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = { validated: 0, failed: [], types: {} };
messages.forEach((m, index) => {
  const r = Seed.safeParse(m);
  out.validated++;
  if (!r.success) {
    out.failed.push({ index, message: m, issues: r.error.issues });
    return;
  }
  out.types[r.data.type] = (out.types[r.data.type] || 0) + 1;
});
process.stdout.write(JSON.stringify(out) + "\n");
