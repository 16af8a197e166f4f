// One AG-UI scenario with the official client (@ag-ui/client), against a Quanda server.
// Usage: node scenario.mjs <plain|tool|frontend|abort|resume> <base url> <bearer token> <thread id>
// Prints one JSON object: the events each run received, its result, and the agent's messages after it.
import { HttpAgent } from "@ag-ui/client";

const [scenario, baseUrl, token, threadId] = process.argv.slice(2);
const url = `${baseUrl}/api/ag-ui`;
const auth = { Authorization: `Bearer ${token}` };
const report = { runs: [] };

function recorder() {
  const events = [];
  return { events, subscriber: { onEvent: ({ event }) => { events.push(event); } } };
}

async function run(agent, params = {}, extra = {}) {
  const { events, subscriber } = recorder();
  const entry = { events, error: null };
  report.runs.push(entry);
  try {
    const result = await agent.runAgent(params, { ...subscriber, ...extra });
    entry.newMessages = result.newMessages;
  } catch (err) {
    entry.error = String(err && err.message ? err.message : err);
  }
  entry.messages = structuredClone(agent.messages);
  return entry;
}

function userMessage(id, content) {
  return { id, role: "user", content };
}

// A fetch whose response ends after `cutAfter` events: the connection is closed under the client, as a
// network failure would; it notes the id of the last event that arrived (what a reconnecting client sends).
function cuttingFetch(cutAfter, seen) {
  return async (input, init) => {
    const controller = new AbortController();
    const response = await fetch(input, { ...init, signal: controller.signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let count = 0;
    const body = new ReadableStream({
      async pull(out) {
        const { done, value } = await reader.read();
        if (done) { out.close(); return; }
        buffer += decoder.decode(value, { stream: true });
        const blocks = buffer.split("\n\n");
        buffer = blocks.pop();
        for (const block of blocks) {
          const id = block.split("\n").find((line) => line.startsWith("id: "));
          if (id) seen.lastId = id.slice(4);
          if (block.includes("data: ")) count += 1;
          out.enqueue(new TextEncoder().encode(block + "\n\n"));
          if (count >= cutAfter) {
            controller.abort();
            out.close();
            return;
          }
        }
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

if (scenario === "plain" || scenario === "tool") {
  const agent = new HttpAgent({ url, headers: auth, threadId });
  agent.addMessage(userMessage("u-1", scenario === "plain" ? "Say hello" : "Add milk to my list"));
  await run(agent, { runId: `${scenario}-run` });
} else if (scenario === "frontend") {
  const tools = [{
    name: "confirm_with_user",
    description: "Ask the person at the screen a yes/no question",
    parameters: { type: "object", properties: { question: { type: "string" } }, required: ["question"] },
  }];
  const agent = new HttpAgent({ url, headers: auth, threadId });
  agent.addMessage(userMessage("u-1", "Delete everything?"));
  const first = await run(agent, { runId: "frontend-1", tools });
  const finished = first.events.find((e) => e.type === "RUN_FINISHED");
  const pending = finished?.outcome?.pendingToolCallIds ?? [];
  for (const toolCallId of pending) {
    // the frontend runs its tool: here the person says yes
    agent.addMessage({ id: `result-${toolCallId}`, role: "tool", toolCallId, content: "The user said: yes" });
  }
  await run(agent, { runId: "frontend-2", tools });
} else if (scenario === "abort") {
  const agent = new HttpAgent({ url, headers: auth, threadId });
  agent.addMessage(userMessage("u-1", "Tell me a long story"));
  await run(agent, { runId: "abort-run" }, {
    onTextMessageContentEvent: () => { agent.abortRun(); },
  });
} else if (scenario === "resume") {
  const seen = { lastId: null };
  const first = new HttpAgent({ url, headers: auth, threadId, fetch: cuttingFetch(6, seen) });
  first.addMessage(userMessage("u-1", "Count slowly"));
  await run(first, { runId: "resume-run" });
  report.lastEventId = seen.lastId;
  const again = new HttpAgent({
    url, threadId, headers: { ...auth, "Last-Event-ID": seen.lastId }, initialMessages: first.messages,
  });
  await run(again, { runId: "resume-run" });
} else {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(report) + "\n");
