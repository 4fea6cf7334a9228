// A scripted customer on the bank's own web pages, for the redirect flow in a sandbox: plain
// HTTP form posts with Node's fetch (no browser, nothing from the mesh). It opens the wallet's
// authorisation link, signs in (password + the current one-time code of the customer's
// published TOTP secret), approves the consent for an account and returns where the bank sends
// the browser back (the wallet's redirect URI with code, state and iss), without following it.

const CSRF = /name="csrf_token" value="([^"]+)"/;
const ACCOUNT = /name="accounts" value="([^"]+)"/g;

/** HTML entities the bank's templates escape in attribute values. */
function unescapeHtml(text) {
  return text
    .replaceAll("&#34;", '"')
    .replaceAll("&#39;", "'")
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&amp;", "&");
}

/** A browser's session on the bank's site: its cookies, and redirects followed on the site only. */
class BankSession {
  constructor(baseUrl) {
    this.base = new URL(baseUrl);
    this.cookies = new Map();
  }

  async send(target, form) {
    const url = new URL(target, this.base);
    const headers = { cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ") };
    const init = { method: form ? "POST" : "GET", headers, redirect: "manual" };
    if (form) {
      init.body = new URLSearchParams(form).toString();
      headers["content-type"] = "application/x-www-form-urlencoded";
    }
    const response = await fetch(url, init);
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const at = pair.indexOf("=");
      this.cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    return { status: response.status, location: response.headers.get("location") ?? "", body: await response.text() };
  }

  /** GET, following redirects that stay on the bank's site (at most five). */
  async open(target) {
    let answer = await this.send(target);
    for (let hops = 0; hops < 5 && answer.status >= 300 && answer.status < 400; hops += 1) {
      if (!answer.location.startsWith("/") || answer.location.startsWith("//")) break;
      answer = await this.send(answer.location);
    }
    return answer;
  }
}

function csrfOf(page, what) {
  const found = CSRF.exec(page.body);
  if (!found) throw new Error(`no form on the ${what} page (HTTP ${page.status})`);
  return unescapeHtml(found[1]);
}

/**
 * The customer authorises on the bank's pages. `codes` yields one-time codes (a later step on
 * each call). Resolves to { location, query, account } where the bank sends the browser back.
 */
export async function authoriseOnBankPages({ bankWeb, authorizationUrl, username, password, codes, account }) {
  const browser = new BankSession(bankWeb);
  const signInPage = await browser.open(authorizationUrl);
  if (signInPage.status !== 200) throw new Error(`the authorisation link did not open (HTTP ${signInPage.status})`);
  let signedIn;
  let form = signInPage;
  for (let attempt = 0; attempt < 2; attempt += 1) {
    signedIn = await browser.send("/authorize/sign-in", {
      csrf_token: csrfOf(form, "sign-in"),
      username,
      password,
      one_time_code: codes(),
    });
    if (signedIn.status !== 401) break;
    form = signedIn; // this step's code was taken: one more try with the next one
  }
  if (signedIn.status !== 303) throw new Error(`sign-in refused (HTTP ${signedIn.status})`);
  const consentPage = await browser.open(signedIn.location);
  const offered = [...consentPage.body.matchAll(ACCOUNT)].map((m) => unescapeHtml(m[1]));
  const chosen = account || offered[0];
  if (!chosen) throw new Error("the customer has no account to share");
  const decided = await browser.send(
    "/authorize/consent",
    new URLSearchParams([
      ["csrf_token", csrfOf(consentPage, "consent")],
      ["decision", "approve"],
      ["accounts", chosen],
    ]),
  );
  if (decided.status !== 303 || decided.location.startsWith("/")) {
    throw new Error(`the decision was not accepted (HTTP ${decided.status})`);
  }
  const query = Object.fromEntries(new URL(decided.location).searchParams);
  return { location: decided.location, query, account: chosen };
}
