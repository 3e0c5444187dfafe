-- Run by scripts/infra over the private socket after the first start.
-- root over TCP from loopback, no password (test server on 127.0.0.1 only).
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'root'@'::1' IDENTIFIED VIA mysql_native_password USING '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'::1' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS bearbnb;
CREATE DATABASE IF NOT EXISTS bnb_contract;
FLUSH PRIVILEGES;
