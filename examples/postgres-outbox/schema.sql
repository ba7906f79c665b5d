CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, customer text, total numeric, document jsonb);
CREATE TABLE IF NOT EXISTS outbox (id bigserial PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL, sent_at timestamptz);
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN PERFORM pg_notify('outbox_new', NEW.id::text); RETURN NEW; END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION outbox_notify();
