"""streamlearn's connections to the outside world.

- :mod:`connectors.paths`: where the project keeps its state, jars and venv.
- :mod:`connectors.ports`: whether a loopback port is free.
- :mod:`connectors.kafka_broker`: a real single-node KRaft Kafka broker on loopback.
- :mod:`connectors.kafka_io`: kafka-python admin, batching keyed producer, consumer.
- :mod:`connectors.publisher`: the publishing SDK (public path :mod:`streamlearn.publish`).
- :mod:`connectors.flink_cluster`: a standalone Flink cluster from PyFlink's own ``bin/``,
  and job submission (``flink run -py``).
"""
