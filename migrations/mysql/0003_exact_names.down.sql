-- Gives the id and name columns back the tables' default collation.

ALTER TABLE `consumer_messages`
  MODIFY `id` varchar(64) NOT NULL,
  MODIFY `consumer_type` varchar(255) NOT NULL,
  MODIFY `payload_type` varchar(255) NOT NULL,
  MODIFY `insert_id` varchar(255) NOT NULL;

ALTER TABLE `poisoned_messages`
  MODIFY `id` varchar(64) NOT NULL,
  MODIFY `consumer_type` varchar(255) NOT NULL,
  MODIFY `payload_type` varchar(255) NOT NULL,
  MODIFY `insert_id` varchar(255) NOT NULL;

ALTER TABLE `scheduled_messages`
  MODIFY `id` varchar(64) NOT NULL,
  MODIFY `tag` varchar(255) NULL,
  MODIFY `payload_type` varchar(255) NOT NULL;
