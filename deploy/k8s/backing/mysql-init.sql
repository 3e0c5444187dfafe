-- One database per MySQL-backed service; the user comes from the mysql Secret.
CREATE DATABASE IF NOT EXISTS room;
CREATE DATABASE IF NOT EXISTS reservation;
CREATE DATABASE IF NOT EXISTS notification;
GRANT ALL PRIVILEGES ON room.* TO 'bearbnb'@'%';
GRANT ALL PRIVILEGES ON reservation.* TO 'bearbnb'@'%';
GRANT ALL PRIVILEGES ON notification.* TO 'bearbnb'@'%';
