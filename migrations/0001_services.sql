-- Roomkeeper D1 schema: the store of truth for the stateless services.
-- Applied locally by `make setup`/the test harness and in production by
-- `wrangler d1 migrations apply DB --remote --env production`.

-- Comparable sales the valuation model is fitted on.
CREATE TABLE IF NOT EXISTS sales (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  price INTEGER NOT NULL,
  lotsize INTEGER NOT NULL,
  bedrooms INTEGER NOT NULL,
  bathrms INTEGER NOT NULL,
  stories INTEGER NOT NULL,
  driveway INTEGER NOT NULL,
  recroom INTEGER NOT NULL,
  fullbase INTEGER NOT NULL,
  gashw INTEGER NOT NULL,
  airco INTEGER NOT NULL,
  garagepl INTEGER NOT NULL,
  prefarea INTEGER NOT NULL,
  source TEXT NOT NULL DEFAULT 'import',
  created_at INTEGER NOT NULL
);

-- Leads as taken in; enrichment fills the score and valuation columns later.
CREATE TABLE IF NOT EXISTS leads (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  name TEXT NOT NULL,
  email TEXT,
  phone TEXT,
  address TEXT NOT NULL,
  property TEXT,
  timeline TEXT NOT NULL,
  source TEXT NOT NULL,
  notes TEXT,
  status TEXT NOT NULL DEFAULT 'new',
  score INTEGER,
  score_reasons TEXT,
  channel TEXT,
  estimated_value INTEGER,
  valuation TEXT,
  enriched_at INTEGER
);
CREATE INDEX IF NOT EXISTS leads_created ON leads (created_at, id);
CREATE INDEX IF NOT EXISTS leads_score ON leads (score);

-- Normalised contact keys for de-duplication within a window.
CREATE TABLE IF NOT EXISTS lead_keys (
  key TEXT NOT NULL,
  lead_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (key, lead_id)
);
CREATE INDEX IF NOT EXISTS lead_keys_key ON lead_keys (key, created_at);

-- One row per change to a lead (creation, enrichment, status changes).
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  subject TEXT NOT NULL,
  action TEXT NOT NULL,
  actor TEXT NOT NULL,
  detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit (subject, at);

-- Notifications and every delivery attempt.
CREATE TABLE IF NOT EXISTS notifications (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  template TEXT NOT NULL,
  channel TEXT NOT NULL,
  payload TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  delivered_at INTEGER,
  last_error TEXT
);
CREATE TABLE IF NOT EXISTS notification_attempts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  notification_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  at INTEGER NOT NULL,
  status INTEGER,
  outcome TEXT NOT NULL,
  error TEXT
);
CREATE INDEX IF NOT EXISTS notification_attempts_by ON notification_attempts (notification_id, attempt);

-- Inbound webhook events, verified or not (bad signatures are logged, never processed).
CREATE TABLE IF NOT EXISTS webhook_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  source TEXT NOT NULL,
  event_id TEXT,
  verified INTEGER NOT NULL,
  outcome TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS webhook_events_unique ON webhook_events (source, event_id) WHERE verified = 1;
