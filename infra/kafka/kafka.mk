# Local Apache Kafka broker (KRaft, bound to 127.0.0.1) for development and demos.
# Included from the Makefile, which defines BIN. The logic lives in custseg/kafka_broker.py;
# with KAFKA_BOOTSTRAP_SERVERS set these targets only say that the external cluster is used.
KAFKA_PORT ?= 9092
KAFKA_CONTROLLER_PORT ?= 9093
KAFKA_DATA ?= infra/kafka/data
KAFKA_LOGS ?= infra/kafka/logs
KAFKA_CLI = $(BIN)/python -m custseg.kafka_broker --port $(KAFKA_PORT) \
	--controller-port $(KAFKA_CONTROLLER_PORT) --data-dir $(KAFKA_DATA) --log-dir $(KAFKA_LOGS)

.PHONY: kafka-up kafka-down kafka-status

kafka-up: install  ## start the local Kafka broker (127.0.0.1:9092, or KAFKA_PORT=…)
	@$(KAFKA_CLI) up

kafka-down:  ## stop the local Kafka broker (SIGTERM by PID)
	@$(KAFKA_CLI) down

kafka-status:  ## is the local Kafka broker running, and at which address
	@$(KAFKA_CLI) status || [ $$? -eq 3 ]
