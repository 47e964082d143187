"""Apache Kafka for the agents: any cluster's topics (admin) and the project's own local broker
(broker, with its pom.xml, server.properties and log4j2.yaml beside it; cli)."""
