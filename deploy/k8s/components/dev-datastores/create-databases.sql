-- One database per service (each keeps its own alembic_version_<service> table).
CREATE DATABASE identity;
CREATE DATABASE account;
CREATE DATABASE payment;
CREATE DATABASE settlement;
CREATE DATABASE console;
