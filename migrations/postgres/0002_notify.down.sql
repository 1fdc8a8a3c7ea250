DROP TRIGGER IF EXISTS asyncmonolith_notify ON consumer_messages;

DROP FUNCTION IF EXISTS asyncmonolith_notify();
