import spec from '../../api-spec/openapi.json';
import { COUPONS } from '../lib/pricing';
import { LIMITS } from '../lib/validation';

// The OpenAPI document is written by hand; these checks keep it honest about the code.
describe('api-spec/openapi.json', () => {
  const schemas = spec.components.schemas;

  it('documents exactly the coupon codes the pricing module accepts', () => {
    expect([...schemas.NewEnrollment.properties.couponCode.enum].sort()).toEqual(
      [...COUPONS.keys()].sort(),
    );
  });

  it('documents the validation limits of a new course', () => {
    const props = schemas.NewCourse.properties;
    expect(props.title.minLength).toBe(LIMITS.titleMin);
    expect(props.title.maxLength).toBe(LIMITS.titleMax);
    expect(props.description.maxLength).toBe(LIMITS.descriptionMax);
    expect(props.priceCents.maximum).toBe(LIMITS.priceMaxCents);
    expect(props.capacity.maximum).toBe(LIMITS.capacityMax);
    expect(schemas.NewCourse.required).toEqual(['title', 'priceCents', 'capacity']);
  });

  it('resolves every $ref', () => {
    const refs = [...JSON.stringify(spec).matchAll(/"\$ref":"([^"]+)"/g)].map((m) => m[1]);
    expect(refs.length).toBeGreaterThan(10);
    for (const ref of refs) {
      const target = ref
        .replace(/^#\//, '')
        .split('/')
        .reduce<unknown>(
          (node, part) =>
            node !== null && typeof node === 'object'
              ? new Map(Object.entries(node)).get(part)
              : undefined,
          spec,
        );
      expect({ ref, resolved: target !== undefined }).toEqual({ ref, resolved: true });
    }
  });
});
