-- Emulation of Q4M's owner mode on a stock MariaDB/MySQL, for reprow's Q4M adapter tests.
-- Loaded into a fresh database by tests/q4m.rs. See that file for what is and is not emulated.
--
-- The queue `jobs` is a view of `jobs_data` showing only the row this connection owns, which is
-- what `SELECT * FROM jobs` returns in Q4M's owner mode. Rows are claimed by writing the
-- connection's id into `_owner`; a row whose owner connection is gone counts as free, which
-- stands in for Q4M returning a dropped connection's row.

CREATE TABLE jobs_data (
  id BIGINT NOT NULL PRIMARY KEY,
  payload TEXT NOT NULL,
  note VARCHAR(64) NULL,
  _owner BIGINT UNSIGNED NULL,
  KEY (_owner)
) ENGINE=InnoDB;

CREATE VIEW jobs AS SELECT id, payload, note FROM jobs_data WHERE _owner = CONNECTION_ID();

-- reprow's failed_table: it needs these six columns.
CREATE TABLE failures (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  queue VARCHAR(128) NOT NULL,
  payload LONGBLOB NOT NULL,
  status INT NULL,
  message TEXT NOT NULL,
  attempts INT NOT NULL,
  failed_at VARCHAR(40) NOT NULL
) ENGINE=InnoDB;

DELIMITER //

-- queue_wait(table, timeout): claim the first free row (1), or 0 after `timeout` seconds.
-- Only the table `jobs` is emulated; any other name is an error, as an unknown table is in Q4M.
CREATE FUNCTION queue_wait(tbl VARCHAR(128), timeout INT) RETURNS INT NOT DETERMINISTIC MODIFIES SQL DATA
BEGIN
  -- SYSDATE, not NOW: NOW is fixed for the whole statement.
  DECLARE deadline DOUBLE DEFAULT UNIX_TIMESTAMP(SYSDATE(6)) + timeout;
  IF SUBSTRING_INDEX(tbl, '.', -1) <> 'jobs' THEN
    SIGNAL SQLSTATE '42S02' SET MESSAGE_TEXT = 'emulated queue_wait knows only the table jobs';
  END IF;
  -- Q4M: entering owner mode again ends (consumes) the row owned before.
  DELETE FROM jobs_data WHERE _owner = CONNECTION_ID();
  LOOP
    UPDATE jobs_data SET _owner = CONNECTION_ID()
      WHERE _owner IS NULL
         OR _owner NOT IN (SELECT ID FROM information_schema.PROCESSLIST)
      ORDER BY id LIMIT 1;
    IF ROW_COUNT() = 1 THEN
      RETURN 1;
    END IF;
    IF UNIX_TIMESTAMP(SYSDATE(6)) >= deadline THEN
      RETURN 0;
    END IF;
    DO SLEEP(0.05);
  END LOOP;
END //

-- queue_end(): delete the owned row and leave owner mode.
CREATE FUNCTION queue_end() RETURNS INT NOT DETERMINISTIC MODIFIES SQL DATA
BEGIN
  DELETE FROM jobs_data WHERE _owner = CONNECTION_ID();
  RETURN 1;
END //

-- queue_abort(): give the owned row back and leave owner mode.
CREATE FUNCTION queue_abort() RETURNS INT NOT DETERMINISTIC MODIFIES SQL DATA
BEGIN
  UPDATE jobs_data SET _owner = NULL WHERE _owner = CONNECTION_ID();
  RETURN 1;
END //

DELIMITER ;
