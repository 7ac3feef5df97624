// client.responses.create({stream: true}) through the official `openai` npm package, as an app
// on the Responses API streams. It prints what it received as one JSON document on stdout, for
// the Python test to assert on.
//
//   node responses_client.mjs '{"baseURL": "http://127.0.0.1:PORT/v1", "apiKey": "sk-…",
//                               "model": "demo", "input": "hi", "extra": {}}'
//
// Exit code 0 whenever a JSON report was printed (errors are part of the report).

import OpenAI from "openai";

const options = JSON.parse(process.argv[2] ?? "{}");

async function main() {
  const client = new OpenAI({
    baseURL: options.baseURL,
    apiKey: options.apiKey,
    maxRetries: 0,
    timeout: options.timeoutMs ?? 60000,
  });
  const request = {
    model: options.model,
    input: options.input ?? "Say hello",
    stream: true,
    ...(options.extra ?? {}),
  };
  const report = { ok: false, events: [], text: "", deltas: [], response: null, error: null };
  try {
    const stream = await client.responses.create(request);
    for await (const event of stream) {
      report.events.push(event.type);
      if (event.type === "response.output_text.delta") {
        report.text += event.delta;
        report.deltas.push(event.delta);
      }
      if (event.type === "response.completed" || event.type === "response.incomplete") {
        report.response = {
          id: event.response.id,
          status: event.response.status,
          outputText: event.response.output_text ?? null,
          usage: event.response.usage,
        };
      }
    }
    report.ok = report.response !== null;
  } catch (err) {
    report.error = {
      name: err?.constructor?.name ?? "Error",
      status: err?.status ?? null,
      message: String(err?.message ?? err),
      type: err?.error?.type ?? err?.type ?? null,
    };
  }
  process.stdout.write(JSON.stringify(report) + "\n");
}

await main();
