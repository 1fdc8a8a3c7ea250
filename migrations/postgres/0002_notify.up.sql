-- Commits of new messages notify processors in other processes (LISTEN/NOTIFY), once per
-- INSERT statement, on the channel "asyncmonolith:<schema>". Without it, processors poll.

CREATE OR REPLACE FUNCTION asyncmonolith_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('asyncmonolith:' || TG_TABLE_SCHEMA, ''); RETURN NULL; END $$;

DROP TRIGGER IF EXISTS asyncmonolith_notify ON consumer_messages;

CREATE TRIGGER asyncmonolith_notify AFTER INSERT ON consumer_messages FOR EACH STATEMENT EXECUTE FUNCTION asyncmonolith_notify();
