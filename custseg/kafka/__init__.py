"""Apache Kafka for the agents: which cluster to use (cluster), any cluster's topics (admin), and
the project's own local broker (broker; its jars from Maven: jars, with pom.xml, server.properties
and log4j2.yaml beside them; cli)."""
