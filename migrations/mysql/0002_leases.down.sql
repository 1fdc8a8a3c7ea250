-- Stop every processor first: running messages become pending again, and a message produced
-- while its twin ran makes the old unique index fail until one of the two is deleted.

ALTER TABLE `consumer_messages` DROP INDEX `ux_consumer_messages_pending_insert_id`;

ALTER TABLE `consumer_messages` DROP CONSTRAINT `chk_consumer_messages_pending`;

ALTER TABLE `consumer_messages` DROP COLUMN `pending`;

CREATE UNIQUE INDEX `ux_consumer_messages_insert_id_consumer_type` ON `consumer_messages` (`insert_id`,`consumer_type`);
