-- Pusher webhooks that could not be delivered (a permanent refusal, or every attempt failed):
-- kept for operators (`GET /api/admin/pusher/webhooks/dead`), the newest
-- PUSHER_WEBHOOK_DEAD_LETTERS per app.
CREATE TABLE IF NOT EXISTS pusher_webhook_dead (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  app_id TEXT NOT NULL,
  url TEXT NOT NULL,
  reason TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  last_status INTEGER,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS pusher_webhook_dead_app ON pusher_webhook_dead (app_id, id);
