"""The Kafka examples of docs/concepts/connections (the seed page), as written, made runnable.

    bash tests-integration/servers/run.sh start kafka
    cd examples/kafka && python app.py          # reads pipelines.conf from this folder

Copies every event of topic ``bspump-example-in`` to ``bspump-example-out`` until Ctrl+C.
"""

import bspump
import bspump.kafka

app = bspump.BSPumpApplication()
svc = app.get_service("bspump.PumpService")
# Create and register a Kafka connection
svc.add_connection(
    bspump.kafka.KafkaConnection(app, "KafkaConnection")
)


class MyPipeline(bspump.Pipeline):
    def __init__(self, app, pipeline_id):
        super().__init__(app, pipeline_id)
        self.build(
            bspump.kafka.KafkaSource(
                app, self, connection="KafkaConnection"  # Reference by ID
            ),
            bspump.kafka.KafkaSink(
                app, self, connection="KafkaConnection"  # Same connection
            ),
        )


if __name__ == "__main__":
    svc.add_pipeline(MyPipeline(app, "MyPipeline"))
    app.run()
