#!/usr/bin/env node
// An independent OpenBank Mesh client: a partner wallet's core flow, driven from Node.js with
// @grpc/grpc-js and @grpc/proto-loader, built from the .proto files alone (no generated code,
// nothing from the mesh's Python packages).
//
// Steps, each reported as one JSON line on stdout ({"step", "ok", "result" | "error"}):
//   issue_token (client_credentials) -> create_consent (PKCE S256) -> authorise_consent (the
//   bank's app, at identity, with the customer's password + TOTP) -> exchange_code
//   (authorization_code + code_verifier) -> list_accounts -> get_balance -> confirm_funds ->
//   create_payment (WALLET_TOP_UP to the partner's own wallet) -> get_payment (until final).
// With --bank-web (the redirect flow, public endpoints only) authorise_consent becomes
//   push_authorization_request (PAR through the gateway) -> authorise_at_bank (a scripted
//   customer on the bank's pages, bank-pages.mjs; state and iss checked on the way back).
// Exits 0 when every step succeeded, 1 on the first failure, 2 on bad usage.
//
// Usage: node wallet.mjs --help

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

import { authoriseOnBankPages } from "./bank-pages.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..");
const FINAL_PAYMENT_STATES = new Set(["PAYMENT_STATE_SETTLED", "PAYMENT_STATE_REJECTED", "PAYMENT_STATE_CANCELLED"]);
const CONSENT_PERMISSIONS = [
  "CONSENT_PERMISSION_READ_ACCOUNTS",
  "CONSENT_PERMISSION_READ_BALANCES",
  "CONSENT_PERMISSION_CONFIRM_FUNDS",
  "CONSENT_PERMISSION_INITIATE_PAYMENTS",
];
const TOTP_STEP_SECONDS = 30;

// Every option also reads an environment variable, so CI can pass secrets without argv.
const OPTIONS = {
  "mesh-file": {
    env: "OBM_MESH_FILE",
    default: "",
    help: "a local mesh's <data-dir>/mesh.json (openbank-mesh up writes it): gateway and identity from it",
  },
  gateway: { env: "OBM_GATEWAY", default: "127.0.0.1:50050", help: "gateway address host:port" },
  identity: { env: "OBM_IDENTITY", default: "127.0.0.1:50051", help: "identity address (the bank app's side)" },
  "client-id": { env: "OBM_CLIENT_ID", help: "the partner's OAuth client id" },
  "client-secret": { env: "OBM_CLIENT_SECRET", help: "the partner's client secret" },
  "bank-app-secret": { env: "OBM_BANK_APP_SECRET", help: "secret of the `bank-app` internal client (without --bank-web)" },
  "bank-web": { env: "OBM_BANK_WEB", help: "the bank's web app: do the redirect flow there (public endpoints only)" },
  "redirect-uri": { env: "OBM_REDIRECT_URI", help: "with --bank-web: one of the partner's registered redirect URIs" },
  username: { env: "OBM_CUSTOMER_USERNAME", help: "the customer's username" },
  password: { env: "OBM_CUSTOMER_PASSWORD", help: "the customer's password" },
  "totp-secret": { env: "OBM_CUSTOMER_TOTP_SECRET", help: "the customer's base32 TOTP secret" },
  account: { env: "OBM_ACCOUNT", help: "the customer's account to consent to (with --bank-web: default the first)" },
  amount: { env: "OBM_AMOUNT_MINOR_UNITS", default: "1500", help: "amount in minor units (confirm funds, top-up)" },
  currency: { env: "OBM_CURRENCY", default: "EUR", help: "ISO 4217 currency of the amount" },
  "proto-dir": { env: "OBM_PROTO_DIR", default: path.join(REPO_ROOT, "protos"), help: "root of protos/openbank" },
  "googleapis-dir": {
    env: "OBM_GOOGLEAPIS_DIR",
    help: "include dir with google/rpc/status.proto (default: googleapis-common-protos in the repo's .venv)",
  },
  "payment-timeout": { env: "OBM_PAYMENT_TIMEOUT_SECONDS", default: "20", help: "how long to poll GetPayment" },
  events: {
    env: "OBM_EVENTS",
    default: "",
    help: "true: then read the partner's event log (StreamEvents) and resume it from a cursor",
  },
};

/** Print one JSON line describing a step's outcome. */
function report(step, fields) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

/** Parse argv + environment into a settings object; exit 2 with usage on error. */
function readSettings(argv) {
  const spec = Object.fromEntries(Object.keys(OPTIONS).map((name) => [name, { type: "string" }]));
  spec.help = { type: "boolean", short: "h" };
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: spec, strict: true }).values;
  } catch (error) {
    process.stderr.write(`${error.message}\n`);
    process.exit(2);
  }
  if (parsed.help) {
    const lines = Object.entries(OPTIONS).map(
      ([name, o]) => `  --${name.padEnd(17)} ${o.help} (env ${o.env}${o.default ? `, default ${o.default}` : ""})`,
    );
    process.stdout.write(`usage: node wallet.mjs [options]\n\n${lines.join("\n")}\n`);
    process.exit(0);
  }
  const settings = {};
  const missing = [];
  const local = localMeshAddresses(parsed["mesh-file"] ?? process.env.OBM_MESH_FILE);
  const redirectFlow = Boolean(parsed["bank-web"] ?? process.env.OBM_BANK_WEB);
  // The redirect flow needs no bank-app secret (nor a known account); the bank app's way no bank web.
  const optional = redirectFlow
    ? ["googleapis-dir", "bank-app-secret", "account"]
    : ["googleapis-dir", "bank-web", "redirect-uri"];
  for (const [name, option] of Object.entries(OPTIONS)) {
    const value = parsed[name] ?? process.env[option.env] ?? local[name] ?? option.default;
    if (value === undefined && !optional.includes(name)) missing.push(`--${name} (or ${option.env})`);
    settings[name.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = value;
  }
  if (missing.length) {
    process.stderr.write(`missing: ${missing.join(", ")}\n`);
    process.exit(2);
  }
  settings.googleapisDir ??= findGoogleapisDir();
  return settings;
}

/** gateway and identity addresses from a local mesh's mesh.json (`up`, also with --base-port). */
function localMeshAddresses(meshFile) {
  if (!meshFile) return {};
  let recorded;
  try {
    recorded = JSON.parse(fs.readFileSync(meshFile, "utf8"));
  } catch (error) {
    process.stderr.write(`--mesh-file ${meshFile}: ${error.message} (is the mesh running?)\n`);
    process.exit(2);
  }
  const host = recorded.host ?? "127.0.0.1";
  const ports = recorded.ports ?? {};
  const found = {};
  for (const name of ["gateway", "identity"]) if (ports[name]) found[name] = `${host}:${ports[name]}`;
  return found;
}

/** The site-packages directory of the repo's virtualenv holding google/rpc/status.proto. */
function findGoogleapisDir() {
  const lib = path.join(REPO_ROOT, ".venv", "lib");
  for (const entry of fs.existsSync(lib) ? fs.readdirSync(lib) : []) {
    const candidate = path.join(lib, entry, "site-packages");
    if (fs.existsSync(path.join(candidate, "google", "rpc", "status.proto"))) return candidate;
  }
  process.stderr.write("google/rpc/status.proto not found: pass --googleapis-dir (googleapis-common-protos)\n");
  process.exit(2);
}

/** Every .proto under protos/openbank, as paths relative to the proto root. */
function contractFiles(protoDir) {
  const found = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith(".proto")) found.push(path.relative(protoDir, full));
    }
  };
  walk(path.join(protoDir, "openbank"));
  return found.sort();
}

/** Load the contract with proto-loader: plain objects in, plain objects out, enums as names. */
function loadContract(settings) {
  const definition = protoLoader.loadSync(contractFiles(settings.protoDir), {
    includeDirs: [settings.protoDir, settings.googleapisDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).openbank;
}

/**
 * A decoder of google.rpc.Status (the `grpc-status-details-bin` trailer) and the details it
 * packs (ErrorInfo, BadRequest, RetryInfo, QuotaFailure...), from googleapis' own protos.
 */
function statusDecoder(googleapisDir) {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    const local = path.join(googleapisDir, target);
    return fs.existsSync(local) ? local : target;
  };
  root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
  const Status = root.lookupType("google.rpc.Status");
  return (buffer) => {
    const status = Status.decode(buffer);
    return {
      code: status.code,
      message: status.message,
      details: status.details.map((any) => {
        const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
        try {
          const type = root.lookupType(typeName);
          return { "@type": typeName, ...type.toObject(type.decode(any.value), { longs: String, enums: String }) };
        } catch {
          return { "@type": typeName, undecoded: Buffer.from(any.value).toString("base64") };
        }
      }),
    };
  };
}

/** A gRPC error as a plain object: code, message, and the decoded google.rpc.Status details. */
function describeError(error, decodeStatus) {
  const described = {
    code: error.code,
    code_name: grpc.status[error.code] ?? "UNKNOWN",
    message: error.details ?? String(error.message ?? error),
  };
  const raw = error.metadata?.get?.("grpc-status-details-bin") ?? [];
  if (raw.length) {
    const status = decodeStatus(raw[0]);
    described.details = status.details;
    const info = status.details.find((d) => d["@type"] === "google.rpc.ErrorInfo");
    if (info) Object.assign(described, { reason: info.reason, domain: info.domain, metadata: info.metadata });
  }
  return described;
}

/** Promise wrapper of a unary call; keeps the response headers (ratelimit-*, interaction id). */
function unary(client, method, request, metadata, deadlineSeconds = 10) {
  return new Promise((resolve, reject) => {
    let headers = {};
    const call = client[method](
      request,
      metadata ?? new grpc.Metadata(),
      { deadline: Date.now() + deadlineSeconds * 1000 },
      (error, response) => (error ? reject(error) : resolve({ response, headers })),
    );
    call.on("metadata", (received) => {
      headers = received.getMap();
    });
  });
}

/** Bearer metadata; `customerPresent` marks calls made while the customer uses the wallet (FAPI). */
function bearer(token, { customerPresent = false } = {}) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  if (customerPresent) metadata.set("x-fapi-customer-ip-address", "127.0.0.1");
  return metadata;
}

/** RFC 4648 base32 (no padding needed) to bytes. */
function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const cleaned = text.toUpperCase().replace(/[\s=]/g, "");
  let bits = 0;
  let value = 0;
  const out = [];
  for (const char of cleaned) {
    const index = alphabet.indexOf(char);
    if (index < 0) throw new Error("TOTP secret is not base32");
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 6238 TOTP (HMAC-SHA1, 30 s steps, 6 digits) for a given time step. */
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const number = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(number % 1_000_000).padStart(6, "0");
}

/** PKCE (RFC 7636) S256: a random verifier and its challenge. */
function pkcePair() {
  const verifier = crypto.randomBytes(32).toString("base64url"); // 43 characters
  const challenge = crypto.createHash("sha256").update(verifier).digest("base64url");
  return { verifier, challenge };
}

/** A fresh idempotency key (AIP-155): the same key must be reused when retrying one operation. */
function requestId(prefix) {
  return `${prefix}-${crypto.randomUUID()}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class StepFailed extends Error {}

/** Run the whole flow; resolves when every step succeeded, throws StepFailed otherwise. */
async function runFlow(settings) {
  const openbank = loadContract(settings);
  const decodeStatus = statusDecoder(settings.googleapisDir);
  const insecure = grpc.credentials.createInsecure();
  const gateway = {
    tokens: new openbank.identity.v1.TokenService(settings.gateway, insecure),
    consents: new openbank.identity.v1.ConsentService(settings.gateway, insecure),
    authorizations: new openbank.identity.v1.AuthorizationService(settings.gateway, insecure),
    accounts: new openbank.account.v1.AccountService(settings.gateway, insecure),
    payments: new openbank.payment.v1.PaymentService(settings.gateway, insecure),
    events: new openbank.events.v1.EventService(settings.gateway, insecure),
  };
  // The bank's customer app: not a partner, so it talks to identity directly (internal rpcs).
  const bankApp = {
    tokens: new openbank.identity.v1.TokenService(settings.identity, insecure),
    consents: new openbank.identity.v1.ConsentService(settings.identity, insecure),
  };
  const clients = [...Object.values(gateway), ...Object.values(bankApp)];

  /** Run one step, report it (through `show`, which drops secrets), and stop the flow on failure. */
  const step = async (name, action, show = (result) => result) => {
    try {
      const result = await action();
      report(name, { ok: true, result: show(result) });
      return result;
    } catch (error) {
      const described = error.code === undefined ? { message: String(error) } : describeError(error, decodeStatus);
      report(name, { ok: false, error: described });
      throw new StepFailed(name);
    }
  };

  try {
    const partnerToken = await step("issue_token", async () => {
      const { response } = await unary(gateway.tokens, "IssueToken", {
        grant_type: "GRANT_TYPE_CLIENT_CREDENTIALS",
        client_id: settings.clientId,
        client_secret: settings.clientSecret,
        scopes: ["consents:write", "consents:read"],
      });
      return {
        token_type: response.token_type,
        expires_in: response.expires_in,
        scopes: response.scopes,
        access_token: response.access_token,
      };
    }, withoutSecrets);

    const pkce = pkcePair();
    const consent = await step("create_consent", async () => {
      const expire = Math.floor(Date.now() / 1000) + 24 * 3600;
      const { response, headers } = await unary(
        gateway.consents,
        "CreateConsent",
        {
          request_id: requestId("node-consent"),
          permissions: CONSENT_PERMISSIONS,
          expire_time: { seconds: String(expire), nanos: 0 },
          per_payment_limit: { currency_code: settings.currency, minor_units: "50000" },
          code_challenge: pkce.challenge,
          code_challenge_method: "S256",
        },
        bearer(partnerToken.access_token),
      );
      const c = response.consent;
      return {
        name: c.name,
        partner: c.partner,
        state: c.state,
        permissions: c.permissions,
        ratelimit: pickRateLimit(headers),
      };
    });

    const authorised = settings.bankWeb
      ? await redirectFlow(settings, gateway, step, partnerToken, consent, pkce)
      : await step("authorise_consent", async () => {
          const { response: appToken } = await unary(bankApp.tokens, "IssueToken", {
            grant_type: "GRANT_TYPE_CLIENT_CREDENTIALS",
            client_id: "bank-app",
            client_secret: settings.bankAppSecret,
            scopes: ["consents:authorise"],
          });
          // Identity accepts each TOTP step once, and one step either side of now: if this step's
          // code was already used (another login this half-minute), the next step's code is valid.
          const now = Math.floor(Date.now() / 1000 / TOTP_STEP_SECONDS);
          let lastError;
          for (const totpStep of [now, now + 1]) {
            try {
              const { response } = await unary(
                bankApp.consents,
                "AuthoriseConsent",
                {
                  request_id: requestId("node-authorise"),
                  name: consent.name,
                  username: settings.username,
                  password: settings.password,
                  one_time_code: totp(settings.totpSecret, totpStep),
                  accounts: [settings.account],
                },
                bearer(appToken.access_token),
              );
              return {
                state: response.consent.state,
                accounts: response.consent.accounts,
                customer: response.consent.customer,
                authorization_code: response.authorization_code,
              };
            } catch (error) {
              lastError = error;
              const reason = error.metadata?.get?.("grpc-status-details-bin")?.length
                ? describeError(error, decodeStatus).reason
                : undefined;
              if (reason !== "SCA_FAILED") throw error;
            }
          }
          throw lastError;
        }, withoutSecrets);

    const consentToken = await step("exchange_code", async () => {
      const { response } = await unary(gateway.tokens, "IssueToken", {
        grant_type: "GRANT_TYPE_AUTHORIZATION_CODE",
        client_id: settings.clientId,
        client_secret: settings.clientSecret,
        code: authorised.authorization_code,
        code_verifier: pkce.verifier,
      });
      return {
        token_type: response.token_type,
        consent: response.consent,
        scopes: response.scopes,
        has_refresh_token: response.refresh_token.length > 0,
        access_token: response.access_token,
      };
    }, withoutSecrets);
    const reading = () => bearer(consentToken.access_token, { customerPresent: true });

    await step("list_accounts", async () => {
      const { response, headers } = await unary(gateway.accounts, "ListAccounts", { page_size: 50 }, reading());
      return {
        accounts: response.accounts.map((a) => ({
          name: a.name,
          display_number: a.display_number,
          currency_code: a.currency_code,
          type: a.type,
          status: a.status,
        })),
        next_page_token: response.next_page_token,
        ratelimit: pickRateLimit(headers),
      };
    });

    await step("get_balance", async () => {
      const { response } = await unary(gateway.accounts, "GetBalance", { account: settings.account }, reading());
      const b = response.balance;
      return { account: b.account, current: b.current, available: b.available };
    });

    await step("confirm_funds", async () => {
      const { response } = await unary(
        gateway.accounts,
        "ConfirmFunds",
        { account: settings.account, amount: { currency_code: settings.currency, minor_units: settings.amount } },
        reading(),
      );
      return {
        funds_available: response.funds_available,
        amount: { currency_code: settings.currency, minor_units: settings.amount },
      };
    });

    const payment = await step("create_payment", async () => {
      const { response } = await unary(
        gateway.payments,
        "CreatePayment",
        {
          request_id: requestId("node-topup"),
          debtor_account: settings.account,
          creditor_wallet: consent.partner,
          amount: { currency_code: settings.currency, minor_units: settings.amount },
          type: "PAYMENT_TYPE_WALLET_TOP_UP",
          remittance_information: "Node wallet top-up",
          end_to_end_id: `node-${Date.now()}`,
        },
        reading(),
        30,
      );
      return summarisePayment(response.payment);
    });

    await step("get_payment", async () => {
      const deadline = Date.now() + Number(settings.paymentTimeout) * 1000;
      for (;;) {
        const { response } = await unary(gateway.payments, "GetPayment", { name: payment.name }, reading());
        if (FINAL_PAYMENT_STATES.has(response.payment.state) || Date.now() > deadline) {
          return summarisePayment(response.payment);
        }
        await sleep(250);
      }
    });

    if (["1", "true"].includes(String(settings.events).toLowerCase())) {
      await eventsFlow(settings, gateway, step, payment.name);
    }
  } finally {
    clients.forEach((client) => client.close());
  }
}

/**
 * The partner's event log: a client-credentials token with events:read (no consent), then
 * StreamEvents from the start of the log until the payment's SETTLED event; then, as after a
 * disconnect, StreamEvents again after the cursor of the payment's first event: the wallet keeps
 * the cursor of the last event it handled and resumes after it (nothing missed, nothing twice).
 */
async function eventsFlow(settings, gateway, step, paymentName) {
  const token = await step("events_token", async () => {
    const { response } = await unary(gateway.tokens, "IssueToken", {
      grant_type: "GRANT_TYPE_CLIENT_CREDENTIALS",
      client_id: settings.clientId,
      client_secret: settings.clientSecret,
      scopes: ["events:read"],
    });
    return { scopes: response.scopes, access_token: response.access_token };
  }, withoutSecrets);
  const settled = (seen) => seen.some((e) => e.resource === paymentName && e.payment?.state === "PAYMENT_STATE_SETTLED");
  const request = (afterCursor) => ({ after_cursor: afterCursor, types: ["EVENT_TYPE_PAYMENT_STATE_CHANGED"] });
  const mine = (events) => events.filter((e) => e.resource === paymentName).map(summariseEvent);
  const streamed = await step("stream_events", async () => {
    const seen = await readStream(gateway.events, request("0"), bearer(token.access_token), settled, 30);
    return { read: seen.length, payment_events: mine(seen) };
  });
  await step("resume_events", async () => {
    const after = streamed.payment_events[0].cursor;
    const seen = await readStream(gateway.events, request(after), bearer(token.access_token), settled, 30);
    return { after_cursor: after, payment_events: mine(seen) };
  });
}

/** Read a server stream until `done(seen)` (then cancel it); reject on error or timeout. */
function readStream(client, request, metadata, done, timeoutSeconds) {
  return new Promise((resolve, reject) => {
    const seen = [];
    let finished = false;
    const call = client.StreamEvents(request, metadata);
    const finish = (outcome) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      call.cancel();
      outcome();
    };
    const timer = setTimeout(() => finish(() => reject(new Error("timed out waiting for events"))), timeoutSeconds * 1000);
    call.on("data", (message) => {
      seen.push(message.event);
      if (done(seen)) finish(() => resolve(seen));
    });
    call.on("error", (error) => finish(() => reject(error))); // our own cancel comes after finishing
    call.on("end", () => finish(() => reject(new Error("the stream ended"))));
  });
}

function summariseEvent(e) {
  return { cursor: e.cursor, event_id: e.event_id, type: e.type, consent: e.consent, state: e.payment?.state };
}

/**
 * The redirect flow (FAPI 2.0 shape): PAR through the gateway, then the customer (scripted, on
 * the bank's pages) approves and the browser would come back with code, state and iss.
 */
async function redirectFlow(settings, gateway, step, partnerToken, consent, pkce) {
  const state = crypto.randomBytes(16).toString("base64url");
  const pushed = await step("push_authorization_request", async () => {
    const { response } = await unary(
      gateway.authorizations,
      "PushAuthorizationRequest",
      {
        request_id: requestId("node-par"),
        consent: consent.name,
        redirect_uri: settings.redirectUri,
        code_challenge: pkce.challenge,
        code_challenge_method: "S256",
        state,
      },
      bearer(partnerToken.access_token),
    );
    return { expires_in: response.expires_in, request_uri: response.request_uri };
  }, ({ request_uri: _uri, ...shown }) => shown);
  const authorizationUrl =
    `${settings.bankWeb.replace(/\/$/, "")}/authorize?` +
    new URLSearchParams({ client_id: settings.clientId, request_uri: pushed.request_uri });
  let nextStep = Math.floor(Date.now() / 1000 / TOTP_STEP_SECONDS);
  const codes = () => totp(settings.totpSecret, nextStep++); // each call a later step (accepted once each)
  return step("authorise_at_bank", async () => {
    const back = await authoriseOnBankPages({
      bankWeb: settings.bankWeb,
      authorizationUrl,
      username: settings.username,
      password: settings.password,
      codes,
      account: settings.account,
    });
    if (!back.location.startsWith(settings.redirectUri)) throw new Error("the bank sent the browser elsewhere");
    if (back.query.state !== state) throw new Error("state is not the one pushed");
    if (!back.query.iss) throw new Error("no iss (RFC 9207)");
    if (!back.query.code) throw new Error(`no code: ${back.query.error ?? "?"}`);
    settings.account ??= back.account;
    return {
      redirect_uri: settings.redirectUri,
      iss: back.query.iss,
      account: back.account,
      authorization_code: back.query.code,
    };
  }, withoutSecrets);
}

/** A step result without its bearer tokens and codes: they never go to logs. */
function withoutSecrets(result) {
  const { access_token: _token, authorization_code: _code, ...shown } = result;
  return shown;
}

/** The fields of a payment worth showing. */
function summarisePayment(p) {
  return {
    name: p.name,
    state: p.state,
    iso20022_status: p.iso20022_status,
    status_reason: p.status_reason,
    amount: p.amount,
    creditor_wallet: p.creditor_wallet,
  };
}

/** The ratelimit-* response headers, when the gateway sent them. */
function pickRateLimit(headers) {
  return Object.fromEntries(Object.entries(headers).filter(([key]) => key.startsWith("ratelimit-")));
}

const settings = readSettings(process.argv.slice(2));
try {
  await runFlow(settings);
  report("done", { ok: true });
} catch (error) {
  if (!(error instanceof StepFailed)) report("setup", { ok: false, error: { message: String(error?.stack ?? error) } });
  report("done", { ok: false });
  process.exitCode = 1;
}
