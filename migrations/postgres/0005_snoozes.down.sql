ALTER TABLE "consumer_messages" DROP COLUMN "snoozes";
