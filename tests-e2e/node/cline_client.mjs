// A chat request the way Cline sends it, through the official `openai` npm package (the very
// library Cline uses for OpenAI-compatible providers): stream: true,
// stream_options.include_usage, temperature 0, tools, a long system prompt. It prints what it
// received as one JSON document on stdout, for the Python test to assert on.
//
//   node cline_client.mjs '{"baseURL": "http://127.0.0.1:PORT/v1", "apiKey": "sk-…",
//                           "model": "demo", "tools": true, "abortAfterChunks": null}'
//
// Exit code 0 whenever a JSON report was printed (errors are part of the report).

import OpenAI from "openai";

const options = JSON.parse(process.argv[2] ?? "{}");

// Cline's system prompt is tens of kilobytes of tool documentation; size matters to a relay.
function longSystemPrompt(bytes) {
  const section =
    "You are Cline, a highly skilled software engineer. TOOL USE: you have access to a set " +
    "of tools that are executed upon the user's approval. Use one tool per message. ";
  let text = "";
  for (let i = 0; text.length < bytes; i++) text += `## Rule ${i}\n${section}\n`;
  return text.slice(0, bytes);
}

const CLINE_TOOLS = [
  {
    type: "function",
    function: {
      name: "read_file",
      description: "Read the contents of a file at the specified path.",
      parameters: {
        type: "object",
        properties: { path: { type: "string", description: "Path relative to the workspace" } },
        required: ["path"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "execute_command",
      description: "Execute a CLI command on the system.",
      parameters: {
        type: "object",
        properties: {
          command: { type: "string" },
          requires_approval: { type: "boolean" },
        },
        required: ["command", "requires_approval"],
      },
    },
  },
];

async function main() {
  const client = new OpenAI({
    baseURL: options.baseURL,
    apiKey: options.apiKey,
    maxRetries: 0,
    timeout: options.timeoutMs ?? 60000,
    defaultHeaders: { "HTTP-Referer": "https://cline.bot", "X-Title": "Cline" },
  });
  const systemPrompt = longSystemPrompt(options.systemPromptBytes ?? 40000);
  const request = {
    model: options.model,
    messages: [
      { role: "system", content: systemPrompt },
      { role: "user", content: options.prompt ?? "<task>\nList the files.\n</task>" },
    ],
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ...(options.tools ? { tools: CLINE_TOOLS } : {}),
    ...(options.maxTokens ? { max_tokens: options.maxTokens } : {}),
    ...(options.extra ?? {}),
  };
  const report = {
    ok: false,
    chunks: 0,
    content: "",
    contentDeltas: [],
    toolCalls: {},
    usage: null,
    finishReason: null,
    ids: [],
    aborted: false,
    error: null,
    requestBytes: JSON.stringify(request).length,
    request, // what was sent: the demo LLM's tokens are a function of it
  };
  const controller = new AbortController();
  try {
    const stream = await client.chat.completions.create(request, { signal: controller.signal });
    for await (const chunk of stream) {
      report.chunks += 1;
      if (!report.ids.includes(chunk.id)) report.ids.push(chunk.id);
      const choice = chunk.choices?.[0];
      const delta = choice?.delta;
      if (delta?.content) {
        report.content += delta.content;
        report.contentDeltas.push(delta.content);
      }
      for (const call of delta?.tool_calls ?? []) {
        const slot = (report.toolCalls[call.index] ??= { id: null, name: "", arguments: "" });
        if (call.id) slot.id = call.id;
        if (call.function?.name) slot.name += call.function.name;
        if (call.function?.arguments) slot.arguments += call.function.arguments;
      }
      if (choice?.finish_reason) report.finishReason = choice.finish_reason;
      if (chunk.usage) report.usage = chunk.usage;
      if (options.abortAfterChunks && report.chunks >= options.abortAfterChunks) {
        report.aborted = true;
        controller.abort();
        break;
      }
    }
    report.ok = !report.aborted;
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
