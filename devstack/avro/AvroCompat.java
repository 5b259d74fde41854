// Apache Avro's own verdict on reader/writer schema pairs, for `layerfill schemas check`
// (layerfill/serde/avro_java.py). Run with the Avro jars on the class path, as a single-file source program:
//   java -cp '<cache>/avro-1.12.2/lib/*' AvroCompat.java < pairs.json
// stdin:  [{"id": "...", "reader": <schema JSON>, "writer": <schema JSON>}, ...]
// stdout: [{"id": "...", "compatible": true|false, "incompatibilities": [{"type", "location", "message",
//           "reader", "writer"}], "error": "..." (a schema Avro cannot parse)}, ...]
// SchemaCompatibility.checkReaderWriterCompatibility runs Avro's ReaderWriterCompatibilityChecker and keeps
// every incompatibility it finds (type, JSON-pointer location into the reader schema, message).

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.avro.Schema;
import org.apache.avro.SchemaCompatibility;

public class AvroCompat {
  public static void main(String[] args) throws Exception {
    ObjectMapper json = new ObjectMapper();
    JsonNode pairs = json.readTree(System.in);
    ArrayNode out = json.createArrayNode();
    for (JsonNode pair : pairs) {
      ObjectNode result = out.addObject();
      result.put("id", pair.path("id").asText());
      Schema reader;
      Schema writer;
      try {
        reader = new Schema.Parser().parse(json.writeValueAsString(pair.get("reader")));
        writer = new Schema.Parser().parse(json.writeValueAsString(pair.get("writer")));
      } catch (RuntimeException e) {
        result.put("compatible", false);
        result.put("error", e.getMessage());
        result.putArray("incompatibilities");
        continue;
      }
      SchemaCompatibility.SchemaCompatibilityResult verdict =
          SchemaCompatibility.checkReaderWriterCompatibility(reader, writer).getResult();
      result.put(
          "compatible",
          verdict.getCompatibility() == SchemaCompatibility.SchemaCompatibilityType.COMPATIBLE);
      ArrayNode found = result.putArray("incompatibilities");
      for (SchemaCompatibility.Incompatibility i : verdict.getIncompatibilities()) {
        ObjectNode item = found.addObject();
        item.put("type", i.getType().name());
        item.put("location", i.getLocation());
        item.put("message", i.getMessage());
        item.put("reader", i.getReaderFragment().toString());
        item.put("writer", i.getWriterFragment().toString());
      }
    }
    json.writeValue(System.out, out);
  }
}
